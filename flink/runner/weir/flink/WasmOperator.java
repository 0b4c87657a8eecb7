package weir.flink;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.State;
import org.apache.flink.api.common.state.StateDescriptor;
import org.apache.flink.api.common.state.StateTtlConfig;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeutils.base.StringSerializer;
import org.apache.flink.runtime.checkpoint.CheckpointOptions;
import org.apache.flink.runtime.state.CheckpointStreamFactory;
import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.streaming.api.operators.OperatorSnapshotFutures;
import org.apache.flink.api.common.typeutils.base.array.BytePrimitiveArraySerializer;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedMultiInput;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.InternalTimer;
import org.apache.flink.streaming.api.operators.InternalTimerService;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.operators.Triggerable;
import org.apache.flink.streaming.api.operators.TwoInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.util.OutputTag;

/**
 * A weir Wasm operator as a Flink operator. It buffers events (up to weir's batch bounds, or a
 * bundle timeout), and for each batch builds the input frame from the events and their keys' Flink
 * value state, has its {@link Worker} run the module on it, and applies the output frame: emits
 * (main and side outputs), value-state writes, timer operations. Flink owns the state and the
 * timers, so its checkpoints, savepoints, state backends and rescaling carry them. A keyed
 * operator reading broadcast inputs is a two-input operator (keyed events on the first, broadcast
 * events on the second); its broadcast state is its worker's, saved into Flink's broadcast
 * operator state at each checkpoint and handed to every subtask's worker on restore. The buffer is
 * flushed before every barrier ({@link #prepareSnapshotPreBarrier}), before a watermark advances
 * timers, and at the end of input: nothing a checkpoint covers is left in it.
 */
public final class WasmOperator extends AbstractStreamOperator<Event> implements OneInputStreamOperator<Event, Event>,
        TwoInputStreamOperator<Event, Event, Event>, Triggerable<String, VoidNamespace>, BoundedOneInput,
        BoundedMultiInput {
    private static final long serialVersionUID = 1L;
    /** weir's batch bounds (host/src/runtime/mod.rs: BATCH_SIZE, BATCH_BYTES). */
    static final int BATCH_SIZE = 1024;
    static final long BATCH_BYTES = 4 << 20;
    /** Longest an event waits in the buffer when no more come. */
    static final long BUNDLE_TIMEOUT_MS = 100;
    /** How often a subtask looks for an upgrade request. */
    static final long CONTROL_POLL_MS = 200;
    private static final int EVENT_TIME = 0, PROCESSING_TIME = 1;

    private final OperatorSpec spec;

    private transient Worker worker;
    /** Per declared state, its Flink state by kind (null where it is of another kind). */
    transient ValueState<byte[]>[] values;
    transient MapState<String, byte[]>[] maps;
    transient ListState<byte[]>[] lists;
    /** The migrations of the last upgrade still to be applied to some keys, or null. */
    private transient Migration migration;
    /** The migration the operator's state recorded (JSON), until the worker's module is known. */
    private transient String savedMigration;
    /** Answers the guest's map and list calls from {@link #maps} and {@link #lists}. */
    private transient Worker.StateRequests stateRequests;
    /** The declared indices of the value states, in the frames' order. */
    private transient int[] valueStates;
    private transient InternalTimerService<VoidNamespace> timers;
    private transient OutputTag<Event>[] sideTags;
    private transient List<Event> buffer;
    private transient long bufferBytes;
    /** Whether the buffer holds events of broadcast inputs (a batch is of one kind or the other). */
    private transient boolean bufferBroadcast;
    /** Whether the module declares broadcast state. */
    private transient boolean declaresBroadcast;
    /** The broadcast state restored, to hand to the worker when it opens; or null. */
    private transient String restoredBroadcast;
    private transient boolean bundleTimerSet;
    /** Timers Flink fired, waiting for the next timer frame: key, domain, time. */
    private transient List<Object[]> due;
    private transient boolean timerFlushSet;
    private transient long watermark;
    private transient Frames.Writer writer;
    /** Whether it started from a Flink checkpoint or savepoint (else: fresh, maybe from a weir savepoint). */
    private transient boolean restored;
    /** The declared states' names and schema versions. */
    private transient String[] stateNames;
    private transient int[] schemaVersions;
    /** The contract minor version of the module the worker runs: 2, 3 or 4. */
    private transient int contract;
    /** The module running, and the number of the upgrade that made it so (0: the job file's). */
    private transient String activeModule;
    private transient long activeN;
    /**
     * Operator state, the same in every subtask: the active module (so that a restore runs the
     * module its state is of) and the broadcast state. Flink's broadcast operator state, each
     * subtask's copy restored into the subtasks of any parallelism; not union list state, which
     * Flink refuses to checkpoint once some of an operator's subtasks have finished (a source
     * subtask with nothing left to read finishes early).
     */
    private transient org.apache.flink.api.common.state.BroadcastState<String, String> operatorState;
    private static final MapStateDescriptor<String, String> OPERATOR_STATE =
            new MapStateDescriptor<>("weir-operator", StringSerializer.INSTANCE, StringSerializer.INSTANCE);
    /** The worker of an upgrade's module, started ahead of its switch. */
    private transient java.util.concurrent.CompletableFuture<Worker> pendingWorker;
    /** When the last batch before a switch ended ({@link System#nanoTime}). */
    private transient long lastBatchEnd;

    WasmOperator(OperatorSpec spec) {
        this.spec = spec;
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        restored = context.isRestored();
        operatorState = context.getOperatorStateStore().getBroadcastState(OPERATOR_STATE);
        restoredBroadcast = operatorState.get("broadcast");
        savedMigration = operatorState.get("migration");
        String saved = operatorState.get("active-module");
        JsonNode active = saved == null ? null : new ObjectMapper().readTree(saved);
        activeN = active == null ? 0 : active.path("n").asLong();
        activeModule = active == null ? spec.module : active.path("module").asText();
    }

    @Override
    public void snapshotState(org.apache.flink.runtime.state.StateSnapshotContext context) throws Exception {
        super.snapshotState(context);
        ObjectNode active = new ObjectMapper().createObjectNode();
        active.put("n", activeN);
        active.put("module", activeModule);
        operatorState.put("active-module", active.toString());
        if (declaresBroadcast) {
            operatorState.put("broadcast", savedBroadcast());
        } else {
            operatorState.remove("broadcast");
        }
        if (migration != null) {
            operatorState.put("migration", migration.toJson(stateNames));
        } else {
            operatorState.remove("migration");
        }
    }

    /** The worker's broadcast state, as weir's checkpoints record it (JSON). */
    private String savedBroadcast() throws Exception {
        return new String(worker.call(Worker.SAVE_BROADCAST, new byte[0]), StandardCharsets.UTF_8);
    }

    @Override
    public void open() throws Exception {
        super.open();
        worker = startWorker(activeModule);
        adopt(worker.opened);
        if (restoredBroadcast == null && !restored && spec.bootstrapBroadcast != null) {
            restoredBroadcast = java.nio.file.Files.readString(java.nio.file.Path.of(spec.bootstrapBroadcast));
        }
        if (restoredBroadcast != null && declaresBroadcast) {
            worker.call(Worker.LOAD_BROADCAST, restoredBroadcast.getBytes(StandardCharsets.UTF_8));
        }
        if (savedMigration != null && spec.keyed) {
            migration = Migration.fromJson(savedMigration, stateNames, this);
        }
        stateRequests = this::answer;
        sideTags = new OutputTag[spec.sideOutputs.size()];
        for (int i = 0; i < sideTags.length; i++) {
            sideTags[i] = sideOutputTag(spec.uid, spec.sideOutputs.get(i));
        }
        buffer = new ArrayList<>();
        due = new ArrayList<>();
        watermark = Frames.NO_WATERMARK;
        writer = new Frames.Writer();
        if (!restored && spec.bootstrap != null && spec.keyed) {
            loadBootstrap();
        }
        if (spec.exportRoot != null) {
            pollControl(now());
        }
    }

    /** Starts a worker for {@code module} and opens it. */
    private Worker startWorker(String module) throws Exception {
        var task = getRuntimeContext().getTaskInfo();
        String label = "operator '" + spec.uid + "' subtask " + (task.getIndexOfThisSubtask() + 1) + "/"
                + task.getNumberOfParallelSubtasks();
        ObjectMapper json = new ObjectMapper();
        ObjectNode open = json.createObjectNode();
        open.put("module", module);
        open.put("config", spec.config);
        open.put("uid", spec.uid);
        open.put("index", task.getIndexOfThisSubtask());
        open.put("parallelism", task.getNumberOfParallelSubtasks());
        open.put("max-parallelism", task.getMaxNumberOfParallelSubtasks());
        open.put("attempt", task.getAttemptNumber());
        open.put("call-deadline-ms", spec.callDeadlineMs);
        open.put("memory-limit", spec.memoryLimit);
        Worker started = new Worker(spec.weir, label, spec.callDeadlineMs);
        try {
            started.opened = json.readTree(started.call(Worker.OPEN, open.toString().getBytes(StandardCharsets.UTF_8)));
        } catch (Exception e) {
            started.close();
            throw e;
        }
        return started;
    }

    /** Takes up what an opened worker's module says: its contract, its states and their Flink handles. */
    @SuppressWarnings("unchecked")
    private void adopt(JsonNode opened) throws Exception {
        String version = opened.path("contract").asText("0.4.0");
        contract = Integer.parseInt(version.split("\\.")[1]);
        JsonNode states = opened.path("description").path("states");
        values = new ValueState[states.size()];
        stateNames = new String[states.size()];
        schemaVersions = new int[states.size()];
        maps = new MapState[states.size()];
        lists = new ListState[states.size()];
        declaresBroadcast = false;
        List<Integer> valueIndices = new ArrayList<>();
        for (int i = 0; i < states.size(); i++) {
            JsonNode state = states.get(i);
            String kind = state.path("kind").asText();
            String name = state.path("name").asText();
            stateNames[i] = name;
            schemaVersions[i] = state.path("schema-version").asInt();
            if (kind.equals("value")) {
                valueIndices.add(i);
            }
            if (kind.equals("broadcast")) {
                declaresBroadcast = true;
            }
            if (!spec.keyed || kind.equals("broadcast")) {
                continue;
            }
            switch (kind) {
                case "value" -> values[i] = getPartitionedState(
                        withTtl(new ValueStateDescriptor<>(name, BytePrimitiveArraySerializer.INSTANCE), state));
                case "map" -> maps[i] = getPartitionedState(withTtl(
                        new MapStateDescriptor<>(name, StringSerializer.INSTANCE, BytePrimitiveArraySerializer.INSTANCE),
                        state));
                case "list" -> lists[i] = getPartitionedState(
                        withTtl(new ListStateDescriptor<>(name, BytePrimitiveArraySerializer.INSTANCE), state));
                default -> throw new UnsupportedOperationException("operator '" + spec.uid + "' declares state '"
                        + name + "' of kind " + kind + ", which this runner does not know");
            }
        }
        valueStates = valueIndices.stream().mapToInt(Integer::intValue).toArray();
        if (spec.keyed && contract >= 3 && timers == null) {
            timers = getInternalTimerService("weir-timers", VoidNamespaceSerializer.INSTANCE, this);
        }
    }

    /**
     * Looks for an upgrade request every {@link #CONTROL_POLL_MS}: a new one starts its module's
     * worker in the background (compiling it), so that the switch at the barrier only swaps. Each
     * time, it also migrates some of the keys an upgrade's migrations have not reached yet.
     */
    private void pollControl(long time) throws Exception {
        if (migration != null) {
            migration.sweep();
        }
        Upgrade request = Upgrade.read(spec.exportRoot, jobId(), spec.uid);
        if (request != null && request.n() > activeN && !request.rolledBack() && pendingWorker == null) {
            String module = request.module();
            pendingWorker = java.util.concurrent.CompletableFuture.supplyAsync(() -> {
                try {
                    return startWorker(module);
                } catch (Exception e) {
                    throw new java.util.concurrent.CompletionException(e);
                }
            });
        }
        getProcessingTimeService().registerTimer(time + CONTROL_POLL_MS, this::pollControl);
    }

    private String jobId() {
        return getRuntimeContext().getJobInfo().getJobId().toString();
    }

    /** Switches to the requested module just after the barrier of checkpoint {@code checkpointId}. */
    private void switchTo(Upgrade request, long checkpointId) throws Exception {
        Worker next = pendingWorker != null ? pendingWorker.get() : startWorker(request.module());
        pendingWorker = null;
        if (migration != null) {
            // The new module migrates from the running one's layout: the keys the last upgrade's
            // migrations have not reached yet get them first.
            migration.all();
        }
        java.util.Map<String, Integer> oldVersions = new HashMap<>();
        for (int i = 0; i < stateNames.length; i++) {
            oldVersions.put(stateNames[i], schemaVersions[i]);
        }
        Worker old = worker;
        if (declaresBroadcast) {
            // The new module takes the broadcast state over, migrated by it where its schema changed.
            next.call(Worker.LOAD_BROADCAST, old.call(Worker.SAVE_BROADCAST, new byte[0]));
        }
        worker = next;
        old.close();
        adopt(next.opened);
        // Migrations are applied to each key when it is next read, not here: the pause stays short.
        migration = spec.keyed ? Migration.between(oldVersions, stateNames, schemaVersions, request.n(), this) : null;
        activeN = request.n();
        activeModule = request.module();
        var task = getRuntimeContext().getTaskInfo();
        double pauseMs = (System.nanoTime() - lastBatchEnd) / 1e6;
        request.acknowledge(spec.exportRoot, jobId(), spec.uid, task.getIndexOfThisSubtask(), checkpointId, pauseMs);
    }

    /** The module's {@code migrate} of {@code items} of state {@code state}, saved under {@code fromVersion}. */
    List<byte[]> migrated(int state, int fromVersion, List<byte[]> items) throws Exception {
        Frames.Writer w = new Frames.Writer();
        w.u32(state);
        w.u32(fromVersion);
        w.u32(items.size());
        items.forEach(w::bytes);
        Frames.Reader r = new Frames.Reader(worker.call(Worker.MIGRATE, w.toArray()));
        List<byte[]> out = new ArrayList<>();
        for (int i = r.u32(); i > 0; i--) {
            out.add(r.bytes());
        }
        return out;
    }

    /** Loads the keys Flink assigns to this subtask from the weir savepoint's exchange file. */
    private void loadBootstrap() throws Exception {
        byte[] bytes = java.nio.file.Files.readAllBytes(java.nio.file.Path.of(spec.bootstrap));
        if (!java.util.Arrays.equals(java.util.Arrays.copyOf(bytes, 8), Exchange.MAGIC)) {
            throw new IllegalStateException(spec.bootstrap + " is not a state exchange file");
        }
        var task = getRuntimeContext().getTaskInfo();
        Frames.Reader r = new Frames.Reader(java.util.Arrays.copyOfRange(bytes, 8, bytes.length));
        while (!r.done()) {
            int item = r.u8();
            String key = Event.flinkKey(r.bytes());
            boolean mine = KeyGroupRangeAssignment.assignKeyToParallelOperator(key, task.getMaxNumberOfParallelSubtasks(),
                    task.getNumberOfParallelSubtasks()) == task.getIndexOfThisSubtask();
            if (item == Exchange.TIMER) {
                int domain = r.u8();
                long time = r.i64();
                if (mine && timers != null) {
                    setCurrentKey(key);
                    if (domain == EVENT_TIME) {
                        timers.registerEventTimeTimer(VoidNamespace.INSTANCE, time);
                    } else {
                        timers.registerProcessingTimeTimer(VoidNamespace.INSTANCE, time);
                    }
                }
                continue;
            }
            int state = r.u32();
            byte[] mapKey = item == Exchange.MAP_ENTRY ? r.bytes() : null;
            byte[] value = r.bytes();
            if (!mine) {
                continue;
            }
            setCurrentKey(key);
            if (item == Exchange.VALUE && values[state] != null) {
                values[state].update(value);
            } else if (item == Exchange.MAP_ENTRY && maps[state] != null) {
                maps[state].put(Event.flinkKey(mapKey), value);
            } else if (item == Exchange.LIST_ELEMENT && lists[state] != null) {
                lists[state].add(value);
            } else {
                throw new IllegalStateException(spec.bootstrap + ": an entry of state #" + state + " of kind " + item
                        + ", which operator '" + spec.uid + "' does not declare so");
            }
        }
    }

    /** At a savepoint, writes this subtask's keys and timers into the export directory as well. */
    @Override
    public OperatorSnapshotFutures snapshotState(long checkpointId, long timestamp, CheckpointOptions options,
            CheckpointStreamFactory factory) throws Exception {
        if (options.getCheckpointType().isSavepoint() && spec.keyed && Exchange.exporting(spec.exportRoot, jobId())) {
            if (migration != null) {
                migration.all();
            }
            export(checkpointId);
            if (declaresBroadcast && getRuntimeContext().getTaskInfo().getIndexOfThisSubtask() == 0) {
                Exchange.writeText(Exchange.exportDir(spec.exportRoot, jobId(), checkpointId)
                        .resolve(spec.uid + ".broadcast.json"), savedBroadcast());
            }
        }
        OperatorSnapshotFutures snapshot = super.snapshotState(checkpointId, timestamp, options, factory);
        // An upgrade switches just after its barrier's snapshot, which keeps the old module's state:
        // a failure of the new module before the next checkpoint restores that, and a rollback goes on
        // from it with the old module in the same job.
        Upgrade request = Upgrade.read(spec.exportRoot, jobId(), spec.uid);
        if (request != null && request.n() > activeN && !request.rolledBack() && checkpointId >= request.at()) {
            switchTo(request, checkpointId);
        }
        return snapshot;
    }

    private void export(long checkpointId) throws Exception {
        var task = getRuntimeContext().getTaskInfo();
        String job = getRuntimeContext().getJobInfo().getJobId().toString();
        java.nio.file.Path file = Exchange.exportDir(spec.exportRoot, job, checkpointId)
                .resolve(spec.uid + "-" + task.getIndexOfThisSubtask() + ".state");
        try (Exchange.Writer out = new Exchange.Writer(file)) {
            for (int s = 0; s < stateNames.length; s++) {
                if (values[s] == null && maps[s] == null && lists[s] == null) {
                    continue;
                }
                for (String key : keysOf(s)) {
                    setCurrentKey(key);
                    byte[] keyBytes = Event.keyBytes(key);
                    if (values[s] != null) {
                        byte[] value = values[s].value();
                        if (value != null) {
                            out.entry(Exchange.VALUE, keyBytes);
                            out.u32(s);
                            out.bytes(value);
                        }
                    } else if (maps[s] != null) {
                        for (Map.Entry<String, byte[]> entry : maps[s].entries()) {
                            out.entry(Exchange.MAP_ENTRY, keyBytes);
                            out.u32(s);
                            out.bytes(Event.keyBytes(entry.getKey()));
                            out.bytes(entry.getValue());
                        }
                    } else {
                        for (byte[] item : items(lists[s])) {
                            out.entry(Exchange.LIST_ELEMENT, keyBytes);
                            out.u32(s);
                            out.bytes(item);
                        }
                    }
                }
            }
            if (timers != null) {
                timers.forEachEventTimeTimer((namespace, time) -> exportTimer(out, EVENT_TIME, time));
                timers.forEachProcessingTimeTimer((namespace, time) -> exportTimer(out, PROCESSING_TIME, time));
            }
        }
    }

    private void exportTimer(Exchange.Writer out, int domain, long time) throws java.io.IOException {
        out.entry(Exchange.TIMER, Event.keyBytes((String) getCurrentKey()));
        out.out.writeByte(domain);
        out.i64(time);
    }

    /** {@code descriptor}, with the time-to-live its declaration {@code state} gives, if any. */
    private static <S extends State, D extends StateDescriptor<S, ?>> D withTtl(D descriptor, JsonNode state) {
        if (state.hasNonNull("time-to-live")) {
            descriptor.enableTimeToLive(
                    StateTtlConfig.newBuilder(Duration.ofMillis(state.get("time-to-live").asLong())).build());
        }
        return descriptor;
    }

    /** Flink keyed state of this operator. */
    <S extends State> S keyedState(StateDescriptor<S, ?> descriptor) throws Exception {
        return getPartitionedState(descriptor);
    }

    /** The keys of this subtask that state {@code state} holds entries of. */
    List<String> keysOf(int state) {
        List<String> keys = new ArrayList<>();
        try (var stream = getKeyedStateBackend().<VoidNamespace>getKeys(stateNames[state], VoidNamespace.INSTANCE)) {
            stream.forEach(key -> keys.add((String) key));
        }
        return keys;
    }

    /** The current key's items of {@code list} (Flink's heap backend has null for an empty list). */
    static List<byte[]> items(ListState<byte[]> list) throws Exception {
        List<byte[]> items = new ArrayList<>();
        Iterable<byte[]> stored = list.get();
        if (stored != null) {
            stored.forEach(items::add);
        }
        return items;
    }

    /** One of the guest's map or list state calls (host/src/wasm/worker/remote.rs); the reply. */
    private byte[] answer(byte[] request) throws Exception {
        Frames.Reader r = new Frames.Reader(request);
        int op = r.u8();
        int state = r.u32();
        setCurrentKey(Event.flinkKey(r.bytes()));
        Frames.Writer reply = new Frames.Writer();
        MapState<String, byte[]> map = state >= 0 && state < maps.length ? maps[state] : null;
        ListState<byte[]> list = state >= 0 && state < lists.length ? lists[state] : null;
        if (op <= 4 && map == null || (op == 5 || op == 6) && list == null) {
            throw new IllegalArgumentException("state #" + state + " is not a declared " + (op <= 4 ? "map" : "list")
                    + " state of keyed operator '" + spec.uid + "'");
        }
        switch (op) {
            case 1 -> reply.optBytes(map.get(Event.flinkKey(r.bytes())));
            case 2 -> map.put(Event.flinkKey(r.bytes()), r.bytes());
            case 3 -> map.remove(Event.flinkKey(r.bytes()));
            case 4 -> {
                List<Map.Entry<String, byte[]>> entries = new ArrayList<>();
                for (Map.Entry<String, byte[]> entry : map.entries()) {
                    entries.add(Map.entry(entry.getKey(), entry.getValue()));
                }
                // ISO-8859-1 text compares as its bytes do, unsigned: map-key byte order.
                entries.sort(Map.Entry.comparingByKey());
                reply.u32(entries.size());
                for (Map.Entry<String, byte[]> entry : entries) {
                    reply.bytes(Event.keyBytes(entry.getKey()));
                    reply.bytes(entry.getValue());
                }
            }
            case 5 -> {
                List<byte[]> items = items(list);
                reply.u32(items.size());
                items.forEach(reply::bytes);
            }
            case 6 -> list.add(r.bytes());
            case 7 -> {
                if (state < 0 || state >= values.length) {
                    throw new IllegalArgumentException("state #" + state + " is not declared by '" + spec.uid + "'");
                }
                if (values[state] != null) {
                    values[state].clear();
                } else if (maps[state] != null) {
                    maps[state].clear();
                } else if (lists[state] != null) {
                    lists[state].clear();
                }
            }
            default -> throw new IllegalArgumentException("unknown state operation " + op + " (a weir bug)");
        }
        return reply.toArray();
    }

    /** The tag of side output {@code name} of operator {@code uid}. */
    static OutputTag<Event> sideOutputTag(String uid, String name) {
        return new OutputTag<>(uid + "." + name, org.apache.flink.api.common.typeinfo.TypeInformation.of(Event.class));
    }

    @Override
    public void processElement(StreamRecord<Event> record) throws Exception {
        Event event = record.getValue();
        if (spec.keyed && event.key == null) {
            throw new IllegalArgumentException("operator '" + spec.uid + "' reads by hash, but an event without a key"
                    + " reached it: give the stream a key first (an operator such as key_by)");
        }
        buffered(event, false);
    }

    @Override
    public void processElement1(StreamRecord<Event> record) throws Exception {
        processElement(record);
    }

    /** An event of a broadcast input: every subtask gets them all, in the same order. */
    @Override
    public void processElement2(StreamRecord<Event> record) throws Exception {
        buffered(record.getValue(), true);
    }

    /** Buffers {@code event}, of a broadcast input if {@code broadcast}, flushing when the buffer is full. */
    private void buffered(Event event, boolean broadcast) throws Exception {
        if (broadcast != bufferBroadcast) {
            flush();
            bufferBroadcast = broadcast;
        }
        buffer.add(event);
        bufferBytes += event.value.length + (event.key == null ? 0 : event.key.length);
        if (buffer.size() >= BATCH_SIZE || bufferBytes >= BATCH_BYTES) {
            flush();
        } else if (!bundleTimerSet) {
            bundleTimerSet = true;
            long at = getProcessingTimeService().getCurrentProcessingTime() + BUNDLE_TIMEOUT_MS;
            getProcessingTimeService().registerTimer(at, time -> {
                bundleTimerSet = false;
                flush();
            });
        }
    }

    /** One guest call for the buffered events. */
    private void flush() throws Exception {
        if (buffer.isEmpty()) {
            return;
        }
        Map<String, Integer> slots = new HashMap<>();
        List<String> keys = new ArrayList<>();
        int[] eventSlots = new int[buffer.size()];
        for (int i = 0; i < buffer.size(); i++) {
            if (spec.keyed && !bufferBroadcast) {
                String key = Event.flinkKey(buffer.get(i).key);
                Integer slot = slots.get(key);
                if (slot == null) {
                    slot = keys.size();
                    slots.put(key, slot);
                    keys.add(key);
                }
                eventSlots[i] = slot;
            } else {
                eventSlots[i] = -1;
            }
        }
        writer.reset();
        Frames.header(writer, contract, keys.size(), valueStates.length, buffer.size(), watermark, now());
        writeKeyTable(keys);
        for (int i = 0; i < buffer.size(); i++) {
            Frames.event(writer, contract, eventSlots[i], buffer.get(i), watermark);
        }
        buffer.clear();
        bufferBytes = 0;
        apply(worker.call(bufferBroadcast ? Worker.BROADCAST : Worker.BATCH, writer.toArray(), stateRequests), keys);
        lastBatchEnd = System.nanoTime();
    }

    private long now() {
        return getProcessingTimeService().getCurrentProcessingTime();
    }

    /** The key table: each key with its value states' current values (migrated first, after an upgrade). */
    private void writeKeyTable(List<String> keys) throws Exception {
        if (migration != null) {
            migration.keys(keys);
        }
        byte[][] current = new byte[valueStates.length][];
        for (String key : keys) {
            setCurrentKey(key);
            for (int s = 0; s < valueStates.length; s++) {
                current[s] = values[valueStates[s]].value();
            }
            Frames.keyEntry(writer, Event.keyBytes(key), current);
        }
    }

    /** Applies an output frame of a call whose key table was {@code keys}. */
    private void apply(byte[] frame, List<String> keys) throws Exception {
        Frames.Output out;
        try {
            out = Frames.output(frame, contract);
        } catch (IllegalArgumentException e) {
            throw new IllegalStateException("operator '" + spec.uid + "' returned a malformed output frame: "
                    + e.getMessage(), e);
        }
        for (Frames.Emit emit : out.emits()) {
            Event event = emit.event();
            StreamRecord<Event> record = event.timed ? new StreamRecord<>(event, event.time) : new StreamRecord<>(event);
            if (emit.output() == 0) {
                output.collect(record);
            } else if (emit.output() <= sideTags.length) {
                output.collect(sideTags[emit.output() - 1], record);
            } else {
                throw new IllegalStateException("operator '" + spec.uid + "' emitted to output " + emit.output()
                        + ", but declares " + sideTags.length + " side outputs");
            }
        }
        for (Frames.Write write : out.writes()) {
            if (write.slot() < 0 || write.slot() >= keys.size()) {
                throw new IllegalStateException("operator '" + spec.uid + "' wrote state of slot " + write.slot()
                        + ", outside its key table of " + keys.size());
            }
            if (write.state() < 0 || write.state() >= values.length || values[write.state()] == null) {
                throw new IllegalStateException("operator '" + spec.uid + "' wrote state " + write.state()
                        + ", which is not a declared value state");
            }
            setCurrentKey(keys.get(write.slot()));
            if (write.value() == null) {
                values[write.state()].clear();
            } else {
                values[write.state()].update(write.value());
            }
        }
        for (Frames.TimerOp op : out.timerOps()) {
            if (timers == null) {
                throw new IllegalStateException("operator '" + spec.uid + "' set a timer, but its input is not keyed:"
                        + " give it input = \"hash\"");
            }
            if (op.slot() < 0 || op.slot() >= keys.size()) {
                throw new IllegalStateException("operator '" + spec.uid + "' set a timer for slot " + op.slot()
                        + ", outside its key table of " + keys.size());
            }
            setCurrentKey(keys.get(op.slot()));
            boolean eventTime = op.domain() == EVENT_TIME;
            if (op.delete()) {
                if (eventTime) {
                    timers.deleteEventTimeTimer(VoidNamespace.INSTANCE, op.time());
                } else {
                    timers.deleteProcessingTimeTimer(VoidNamespace.INSTANCE, op.time());
                }
            } else if (eventTime) {
                timers.registerEventTimeTimer(VoidNamespace.INSTANCE, op.time());
            } else {
                timers.registerProcessingTimeTimer(VoidNamespace.INSTANCE, op.time());
            }
        }
    }

    @Override
    public void onEventTime(InternalTimer<String, VoidNamespace> timer) throws Exception {
        due.add(new Object[] {timer.getKey(), EVENT_TIME, timer.getTimestamp()});
        if (due.size() >= BATCH_SIZE) {
            flushTimers();
        }
    }

    @Override
    public void onProcessingTime(InternalTimer<String, VoidNamespace> timer) throws Exception {
        due.add(new Object[] {timer.getKey(), PROCESSING_TIME, timer.getTimestamp()});
        if (due.size() >= BATCH_SIZE) {
            flushTimers();
        } else if (!timerFlushSet) {
            // Flink fires the due processing-time timers one by one; they go to the guest together,
            // once Flink has fired them all.
            timerFlushSet = true;
            getProcessingTimeService().registerTimer(now(), time -> {
                timerFlushSet = false;
                flush();
                flushTimers();
            });
        }
    }

    /** One guest call for the timers Flink fired. */
    private void flushTimers() throws Exception {
        if (due.isEmpty()) {
            return;
        }
        Map<String, Integer> slots = new HashMap<>();
        List<String> keys = new ArrayList<>();
        for (Object[] timer : due) {
            slots.computeIfAbsent((String) timer[0], key -> {
                keys.add(key);
                return keys.size() - 1;
            });
        }
        writer.reset();
        Frames.header(writer, contract, keys.size(), valueStates.length, due.size(), watermark, now());
        writeKeyTable(keys);
        for (Object[] timer : due) {
            Frames.timer(writer, slots.get((String) timer[0]), (Integer) timer[1], (Long) timer[2]);
        }
        due.clear();
        apply(worker.call(Worker.TIMERS, writer.toArray(), stateRequests), keys);
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        flush();
        watermark = mark.getTimestamp();
        if (timeServiceManager != null) {
            timeServiceManager.advanceWatermark(mark);
            flushTimers();
        }
        output.emitWatermark(mark);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flush();
        flushTimers();
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void endInput() throws Exception {
        flush();
        flushTimers();
    }

    @Override
    public void endInput(int inputId) throws Exception {
        endInput();
    }

    @Override
    public void finish() throws Exception {
        flush();
        flushTimers();
        super.finish();
    }

    @Override
    public void close() throws Exception {
        if (worker != null) {
            worker.close();
        }
        if (pendingWorker != null) {
            pendingWorker.thenAccept(Worker::close);
        }
        super.close();
    }
}
