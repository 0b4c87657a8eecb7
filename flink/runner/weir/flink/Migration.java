package weir.flink;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeutils.base.LongSerializer;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * The state migrations of an upgrade that changed states' schema versions, applied lazily: to a
 * key's state just before it is next read (the key's events or timers reach the module, or a
 * savepoint exports it), and to the keys nobody reads by a sweep in the background. The switch
 * itself migrates nothing, so its pause does not grow with the state. Each key's keyed state
 * {@code weir-migrated} holds the upgrade it was migrated for; the migration itself (the upgrade
 * and each state's old schema version) is in the operator's state, so that a restore or a rescale
 * goes on with it.
 */
final class Migration {
    /** Keys migrated per step of the sweep. */
    static final int SWEEP_KEYS = 4096;

    /** The number of the upgrade these migrations are of. */
    final long upgrade;
    /** Per declared state: the schema version its entries were saved under, or -1 (unchanged). */
    private final int[] from;
    private final WasmOperator operator;
    private final ValueState<Long> migrated;
    /** The keys the sweep has yet to look at (null until it starts); whether it is done. */
    private Iterator<String> sweep;
    private boolean swept;

    Migration(long upgrade, int[] from, WasmOperator operator) throws Exception {
        this.upgrade = upgrade;
        this.from = from;
        this.operator = operator;
        this.migrated = operator.keyedState(new ValueStateDescriptor<>("weir-migrated", LongSerializer.INSTANCE));
    }

    /**
     * The migrations from the schema versions {@code old} (by state name) to those of
     * {@code names}/{@code versions}, of upgrade {@code upgrade}; null when no schema changed.
     */
    static Migration between(Map<String, Integer> old, String[] names, int[] versions, long upgrade,
            WasmOperator operator) throws Exception {
        int[] from = new int[names.length];
        boolean any = false;
        for (int i = 0; i < names.length; i++) {
            Integer saved = old.get(names[i]);
            from[i] = saved != null && saved != versions[i] ? saved : -1;
            any |= from[i] >= 0;
        }
        return any ? new Migration(upgrade, from, operator) : null;
    }

    /** As the operator's state records it. */
    String toJson(String[] names) {
        ObjectNode json = new ObjectMapper().createObjectNode();
        json.put("upgrade", upgrade);
        ObjectNode versions = json.putObject("from");
        for (int i = 0; i < from.length; i++) {
            if (from[i] >= 0) {
                versions.put(names[i], from[i]);
            }
        }
        return json.toString();
    }

    /** The migration the operator's state recorded, for a module declaring {@code names}. */
    static Migration fromJson(String text, String[] names, WasmOperator operator) throws Exception {
        JsonNode json = new ObjectMapper().readTree(text);
        int[] from = new int[names.length];
        for (int i = 0; i < names.length; i++) {
            from[i] = json.path("from").path(names[i]).asInt(-1);
        }
        return new Migration(json.path("upgrade").asLong(), from, operator);
    }

    /** Migrates those of {@code keys} not migrated yet. */
    void keys(List<String> keys) throws Exception {
        if (swept) {
            return;
        }
        List<String> pending = new ArrayList<>();
        for (String key : keys) {
            operator.setCurrentKey(key);
            Long at = migrated.value();
            if (at == null || at < upgrade) {
                pending.add(key);
            }
        }
        if (pending.isEmpty()) {
            return;
        }
        for (int state = 0; state < from.length; state++) {
            if (from[state] >= 0) {
                migrate(state, pending);
            }
        }
        for (String key : pending) {
            operator.setCurrentKey(key);
            migrated.update(upgrade);
        }
    }

    /** Migrates every key still to be migrated (before a savepoint's export, or another upgrade). */
    void all() throws Exception {
        while (!swept) {
            sweep();
        }
    }

    /** Migrates the next {@link #SWEEP_KEYS} keys of the sweep. */
    void sweep() throws Exception {
        if (swept) {
            return;
        }
        if (sweep == null) {
            Set<String> keys = new LinkedHashSet<>();
            for (int state = 0; state < from.length; state++) {
                if (from[state] >= 0) {
                    keys.addAll(operator.keysOf(state));
                }
            }
            sweep = keys.iterator();
        }
        List<String> next = new ArrayList<>();
        while (sweep.hasNext() && next.size() < SWEEP_KEYS) {
            next.add(sweep.next());
        }
        keys(next);
        swept = !sweep.hasNext();
    }

    /** Rewrites the entries of state {@code state} of {@code keys} through the module's {@code migrate}. */
    private void migrate(int state, List<String> keys) throws Exception {
        var value = operator.values[state];
        if (value != null) {
            // Values in batches of weir's batch size: one call per batch, not per key.
            for (int start = 0; start < keys.size(); start += WasmOperator.BATCH_SIZE) {
                List<String> present = new ArrayList<>();
                List<byte[]> items = new ArrayList<>();
                for (String key : keys.subList(start, Math.min(keys.size(), start + WasmOperator.BATCH_SIZE))) {
                    operator.setCurrentKey(key);
                    byte[] item = value.value();
                    if (item != null) {
                        present.add(key);
                        items.add(item);
                    }
                }
                List<byte[]> rewritten = operator.migrated(state, from[state], items);
                for (int i = 0; i < present.size(); i++) {
                    operator.setCurrentKey(present.get(i));
                    value.update(rewritten.get(i));
                }
            }
            return;
        }
        for (String key : keys) {
            operator.setCurrentKey(key);
            var map = operator.maps[state];
            var list = operator.lists[state];
            if (map != null) {
                List<Map.Entry<String, byte[]>> entries = new ArrayList<>();
                map.entries().forEach(e -> entries.add(Map.entry(e.getKey(), e.getValue())));
                if (entries.isEmpty()) {
                    continue;
                }
                List<byte[]> rewritten =
                        operator.migrated(state, from[state], entries.stream().map(Map.Entry::getValue).toList());
                for (int e = 0; e < entries.size(); e++) {
                    map.put(entries.get(e).getKey(), rewritten.get(e));
                }
            } else if (list != null) {
                List<byte[]> items = WasmOperator.items(list);
                if (!items.isEmpty()) {
                    list.update(operator.migrated(state, from[state], items));
                }
            }
        }
    }
}
