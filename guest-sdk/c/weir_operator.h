/* weir:operator@0.3.0 for C, without an SDK: the canonical-ABI shapes of the `operator`
 * exports, a reader and a writer for the batch frames (docs/batch-frames.md), and the JSON text
 * conventions the SDKs share. Header-only; an operator defines the five exports (see
 * examples/count_c/count.c) and links with rustup's wasm-component-ld:
 *
 *   clang-19 --target=wasm32-wasi --sysroot=/usr -O2 -I guest-sdk/c -c count.c -o count.o
 *   wasm-component-ld --wasm-ld-path /usr/lib/llvm-19/bin/wasm-ld --no-entry \
 *       --component-type wit/v0.3.0/operator.wit --wasi-adapter reactor -o count_c.wasm \
 *       /usr/lib/wasm32-wasi/crt1-reactor.o count.o -L/usr/lib/wasm32-wasi -lc \
 *       /usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a
 *
 * Who frees what (the canonical ABI): the host allocates every argument (a frame, a string) in
 * the guest's memory through `cabi_realloc`, and the guest owns it; a result lives in guest
 * memory until the host has copied it and called the export's `cabi_post_…` function, where the
 * guest frees it. */
#ifndef WEIR_OPERATOR_H
#define WEIR_OPERATOR_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define WEIR_EXPORT(name) __attribute__((export_name("weir:operator/operator@0.3.0#" name)))
#define WEIR_POST(name) __attribute__((export_name("cabi_post_weir:operator/operator@0.3.0#" name)))

/* The host's allocator in the guest: every argument it passes is allocated here. */
__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *old, size_t old_size, size_t align, size_t new_size) {
    (void)old_size;
    if (new_size == 0) return (void *)align;
    return realloc(old, new_size);
}

/* `result<list<u8>, string>` and `result<_, string>` in the return area: a discriminant byte,
 * then a pointer and a length (both 32-bit) at offset 4. */
typedef struct {
    uint8_t is_err;
    uint8_t *ptr;
    size_t len;
} weir_result;

static weir_result weir_ret __attribute__((aligned(8)));

static inline weir_result *weir_ok(uint8_t *ptr, size_t len) {
    weir_ret = (weir_result){0, ptr, len};
    return &weir_ret;
}

/* An error with `message` (copied: the host's `cabi_post_…` call frees it). */
static inline weir_result *weir_err(const char *message) {
    size_t n = strlen(message);
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, message, n);
    weir_ret = (weir_result){1, copy, n};
    return &weir_ret;
}

/* Frees what a result handed to the host held. */
static inline void weir_free_result(weir_result *result) {
    free(result->ptr);
}

/* A `string` or `list<u8>` in canonical-ABI memory: a 32-bit pointer and length. */
typedef struct {
    const char *ptr;
    size_t len;
} weir_str;

/* A state descriptor of `describe()`'s description (40 bytes, 8-aligned). */
typedef struct {
    weir_str name;
    uint8_t kind; /* 0 value, 1 map, 2 list */
    uint32_t schema_version;
    weir_str migrates_from; /* a list<u32>: pointer and count */
    uint8_t has_time_to_live;
    uint64_t time_to_live_ms;
} weir_state_descriptor;

/* `describe()`'s description: name, version, states. */
typedef struct {
    weir_str name;
    weir_str version;
    const weir_state_descriptor *states;
    size_t state_count;
} weir_description;

/* ---- Reading frames (all integers little-endian) ---- */

#define WEIR_NONE 0xFFFFFFFFu
#define WEIR_NO_WATERMARK INT64_MIN

typedef struct {
    const uint8_t *at, *end;
    int truncated;
} weir_reader;

static inline int weir_need(weir_reader *r, size_t n) {
    if (r->truncated || (size_t)(r->end - r->at) < n) {
        r->truncated = 1;
        return 0;
    }
    return 1;
}

/* Copies the next `n` bytes into `out` (zeros once the frame is found truncated). */
static inline void weir_take(weir_reader *r, void *out, size_t n) {
    if (!weir_need(r, n)) {
        memset(out, 0, n);
        return;
    }
    memcpy(out, r->at, n);
    r->at += n;
}

static inline uint8_t weir_u8(weir_reader *r) {
    uint8_t v;
    weir_take(r, &v, 1);
    return v;
}

static inline uint32_t weir_u32(weir_reader *r) {
    uint32_t v;
    weir_take(r, &v, 4);
    return v;
}

static inline int64_t weir_i64(weir_reader *r) {
    int64_t v;
    weir_take(r, &v, 8);
    return v;
}

/* `bytes`, or `opt-bytes` (a NULL pointer when absent). */
static inline weir_str weir_bytes(weir_reader *r, int optional) {
    uint32_t len = weir_u32(r);
    if (optional && len == WEIR_NONE) return (weir_str){NULL, 0};
    if (!weir_need(r, len)) return (weir_str){NULL, 0};
    weir_str s = {(const char *)r->at, len};
    r->at += len;
    return s;
}

/* ---- Writing frames and text ---- */

typedef struct {
    uint8_t *ptr;
    size_t len, cap;
} weir_buf;

static inline void weir_reserve(weir_buf *b, size_t n) {
    if (b->len + n <= b->cap) return;
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->len + n) cap *= 2;
    b->ptr = realloc(b->ptr, cap);
    b->cap = cap;
}

static inline void weir_put(weir_buf *b, const void *bytes, size_t n) {
    weir_reserve(b, n);
    memcpy(b->ptr + b->len, bytes, n);
    b->len += n;
}

static inline void weir_put_u8(weir_buf *b, uint8_t v) { weir_put(b, &v, 1); }
static inline void weir_put_u32(weir_buf *b, uint32_t v) { weir_put(b, &v, 4); }
static inline void weir_put_i64(weir_buf *b, int64_t v) { weir_put(b, &v, 8); }

static inline void weir_patch_u32(weir_buf *b, size_t at, uint32_t v) { memcpy(b->ptr + at, &v, 4); }

/* `opt-bytes`: absent when `s.ptr` is NULL. */
static inline void weir_put_opt_bytes(weir_buf *b, weir_str s) {
    if (!s.ptr) {
        weir_put_u32(b, WEIR_NONE);
        return;
    }
    weir_put_u32(b, (uint32_t)s.len);
    weir_put(b, s.ptr, s.len);
}

/* `opt-ts`: a flag, then 8 bytes either way. */
static inline void weir_put_opt_ts(weir_buf *b, int present, int64_t ts) {
    weir_put_u8(b, present ? 1 : 0);
    weir_put_i64(b, present ? ts : 0);
}

/* A decimal number, as serde_json writes integers. */
static inline void weir_put_decimal(weir_buf *b, uint64_t n) {
    char digits[20];
    int i = 20;
    do {
        digits[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    weir_put(b, digits + i, 20 - i);
}

/* The length of the valid UTF-8 sequence at `s` (1 to 4), or the number of bytes of its longest
 * valid start (0 when the first byte cannot start one): Rust's `from_utf8_lossy` replaces each
 * such start (at least one byte) with U+FFFD. */
static inline size_t weir_utf8_sequence(const uint8_t *s, size_t n, int *valid) {
    uint8_t c = s[0];
    *valid = 1;
    if (c < 0x80) return 1;
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
    else if (c == 0xED) need = 2, hi = 0x9F;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    else {
        *valid = 0;
        return 1;
    }
    for (size_t i = 1; i <= need; i++) {
        uint8_t min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xBF;
        if (i >= n || s[i] < min || s[i] > max) {
            *valid = 0;
            return i;
        }
    }
    return need + 1;
}

/* `text` as a JSON string as serde_json writes one (quotes, `"` and `\` escaped, control
 * characters by name or as \u00xx, the rest as UTF-8), after Rust's `from_utf8_lossy`: what the
 * SDKs emit for a key. */
static inline void weir_put_json_string(weir_buf *b, weir_str text) {
    static const char hex[] = "0123456789abcdef";
    const uint8_t *s = (const uint8_t *)text.ptr;
    size_t n = text.len;
    weir_put_u8(b, '"');
    while (n) {
        int valid;
        size_t len = weir_utf8_sequence(s, n, &valid);
        if (!valid) {
            weir_put(b, "\xEF\xBF\xBD", 3);
        } else if (len > 1 || s[0] >= 0x20) {
            if (s[0] == '"' || s[0] == '\\') weir_put_u8(b, '\\');
            weir_put(b, s, len);
        } else {
            const char *named = s[0] == '\n' ? "\\n" : s[0] == '\t' ? "\\t" : s[0] == '\r' ? "\\r"
                              : s[0] == '\b' ? "\\b" : s[0] == '\f' ? "\\f" : NULL;
            if (named) {
                weir_put(b, named, 2);
            } else {
                char u[6] = {'\\', 'u', '0', '0', hex[s[0] >> 4], hex[s[0] & 15]};
                weir_put(b, u, 6);
            }
        }
        s += len;
        n -= len;
    }
    weir_put_u8(b, '"');
}

#endif
