/* Keyed running count, in C against weir:operator@0.3.0 without an SDK: the same operator as
 * examples/count, writing the same bytes. For each event it reads the key's count (value state
 * "count", a JSON number), adds 1, stores it, and emits {"key":"<key>","count":<n>} with the
 * event's key and timestamp. Built by `cargo xtask build` (see guest-sdk/c/weir_operator.h). */
#include "weir_operator.h"

static const weir_state_descriptor STATES[] = {
    {{"count", 5}, 0, 1, {NULL, 0}, 0, 0},
};

WEIR_EXPORT("describe") weir_description *describe(void) {
    static weir_description d = {{"count", 5}, {"1.0.0", 5}, STATES, 1};
    return &d;
}

WEIR_EXPORT("open") weir_result *open_operator(char *config, size_t config_len, char *uid, size_t uid_len,
                                               uint32_t subtask, uint32_t parallelism, uint32_t max_parallelism,
                                               uint32_t attempt) {
    (void)config_len, (void)uid_len, (void)subtask, (void)parallelism, (void)max_parallelism, (void)attempt;
    free(config);
    free(uid);
    return weir_ok(NULL, 0);
}

WEIR_EXPORT("migrate") weir_result *migrate(uint32_t state, uint32_t from_version, void *items, size_t count) {
    (void)state, (void)from_version, (void)count;
    free(items);
    return weir_err("state 'count' cannot be migrated from another schema version");
}

/* One key of the batch: its bytes in the frame, its count, whether it changed. */
typedef struct {
    weir_str key;
    uint64_t count;
    int dirty;
} slot_state;

/* A count as stored: a JSON number of digits. */
static int parse_count(weir_str value, uint64_t *count) {
    if (value.len == 0 || value.len > 19) return 0;
    uint64_t n = 0;
    for (size_t i = 0; i < value.len; i++) {
        if (value.ptr[i] < '0' || value.ptr[i] > '9') return 0;
        n = n * 10 + (uint64_t)(value.ptr[i] - '0');
    }
    *count = n;
    return 1;
}

static weir_result *count_batch(const uint8_t *input, size_t len) {
    weir_reader r = {input, input + len, 0};
    uint32_t key_count = weir_u32(&r), value_states = weir_u32(&r), events = weir_u32(&r);
    weir_i64(&r); /* watermark */
    weir_i64(&r); /* processing time */
    if (value_states != 1) return weir_err("the host sent another number of value states than the one declared");
    slot_state *slots = calloc(key_count ? key_count : 1, sizeof *slots);
    for (uint32_t k = 0; k < key_count && !r.truncated; k++) {
        slots[k].key = weir_bytes(&r, 0);
        weir_str value = weir_bytes(&r, 1);
        if (value.ptr && !parse_count(value, &slots[k].count)) {
            free(slots);
            return weir_err("value state 'count' holds bytes this operator cannot read");
        }
    }
    weir_buf out = {0};
    weir_reserve(&out, len + 64);
    weir_put_u32(&out, events);
    for (uint32_t e = 0; e < events && !r.truncated; e++) {
        uint32_t slot = weir_u32(&r);
        if (slot == WEIR_NONE || slot >= key_count) {
            free(slots);
            free(out.ptr);
            return weir_err("state 'count' is keyed state, but this operator's input is not keyed: set input = \"hash\" on it in the job file");
        }
        int has_ts = weir_u8(&r);
        int64_t ts = weir_i64(&r);
        weir_u8(&r); /* flags */
        weir_bytes(&r, 0); /* value */
        slot_state *s = &slots[slot];
        s->count += 1;
        s->dirty = 1;
        weir_put_opt_bytes(&out, s->key);
        weir_put_opt_ts(&out, has_ts, ts);
        size_t length_at = out.len;
        weir_put_u32(&out, 0);
        weir_put(&out, "{\"key\":", 7);
        weir_put_json_string(&out, s->key);
        weir_put(&out, ",\"count\":", 9);
        weir_put_decimal(&out, s->count);
        weir_put_u8(&out, '}');
        weir_patch_u32(&out, length_at, (uint32_t)(out.len - length_at - 4));
    }
    if (r.truncated) {
        free(slots);
        free(out.ptr);
        return weir_err("malformed frame: truncated");
    }
    size_t writes_at = out.len;
    uint32_t writes = 0;
    weir_put_u32(&out, 0);
    for (uint32_t k = 0; k < key_count; k++) {
        if (!slots[k].dirty) continue;
        weir_put_u32(&out, k);
        weir_put_u32(&out, 0);
        size_t length_at = out.len;
        weir_put_u32(&out, 0);
        weir_put_decimal(&out, slots[k].count);
        weir_patch_u32(&out, length_at, (uint32_t)(out.len - length_at - 4));
        writes++;
    }
    weir_patch_u32(&out, writes_at, writes);
    weir_put_u32(&out, 0); /* no timer operations */
    free(slots);
    return weir_ok(out.ptr, out.len);
}

WEIR_EXPORT("process-batch") weir_result *process_batch(uint8_t *batch, size_t len) {
    weir_result *result = count_batch(batch, len);
    free(batch);
    return result;
}

WEIR_POST("process-batch") void process_batch_done(weir_result *result) {
    weir_free_result(result);
}

WEIR_EXPORT("on-timers") weir_result *on_timers(uint8_t *timers, size_t len) {
    (void)len;
    free(timers);
    return weir_err("count sets no timers");
}

WEIR_POST("on-timers") void on_timers_done(weir_result *result) {
    weir_free_result(result);
}

WEIR_POST("migrate") void migrate_done(weir_result *result) {
    weir_free_result(result);
}

WEIR_POST("open") void open_done(weir_result *result) {
    weir_free_result(result);
}
