package weir.flink;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.serialization.Encoder;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.runtime.state.FunctionInitializationContext;
import org.apache.flink.runtime.state.FunctionSnapshotContext;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.checkpoint.CheckpointedFunction;
import org.apache.flink.streaming.api.functions.source.legacy.RichParallelSourceFunction;

/**
 * The sources and sinks the Flink runner supports, as weir's own runtime defines them: the file
 * source (one event per line, event time from a JSON field, read in byte ranges that Flink's list
 * state redistributes when the job rescales) and the generator (event i: key {@code k<i mod keys>},
 * value {@code {"seq":i}}, optional event time), and a file sink writing one line per event value.
 */
final class Connectors {
    private Connectors() {}

    /** The position state both sources keep: their parts, as {@code long[2]}. */
    private static ListStateDescriptor<long[]> positions() {
        return new ListStateDescriptor<>("weir-position", PrimitiveArrayTypeInfo.LONG_PRIMITIVE_ARRAY_TYPE_INFO);
    }

    /**
     * What both sources share: their position is a list of parts ({@code long[2]}: a file's byte
     * ranges, a generator's progressions) in operator list state, which Flink redistributes when
     * the job rescales; a fresh start takes its share of a weir savepoint's parts, or its own; a
     * savepoint that `weir flink` exports writes them as JSON too.
     */
    abstract static class PositionedSource extends RichParallelSourceFunction<Event> implements CheckpointedFunction {
        private static final long serialVersionUID = 1L;
        final String uid;
        final double rate;
        private final List<long[]> bootstrap;
        private final String exportRoot;
        private transient ListState<long[]> state;
        /** The parts left, updated under the checkpoint lock. */
        transient List<long[]> parts;
        volatile boolean running = true;

        PositionedSource(String uid, double rate, List<long[]> bootstrap, String exportRoot) {
            this.uid = uid;
            this.rate = rate;
            this.bootstrap = bootstrap;
            this.exportRoot = exportRoot;
        }

        /** The part subtask {@code task} starts from when the job starts afresh. */
        abstract long[] fresh(org.apache.flink.api.common.TaskInfo task);

        @Override
        public void initializeState(FunctionInitializationContext context) throws Exception {
            state = context.getOperatorStateStore().getListState(positions());
            parts = new ArrayList<>();
            var task = getRuntimeContext().getTaskInfo();
            if (context.isRestored()) {
                state.get().forEach(parts::add);
            } else if (bootstrap == null) {
                parts.add(fresh(task));
            } else {
                // Every p-th of a weir savepoint's parts.
                for (int i = task.getIndexOfThisSubtask(); i < bootstrap.size(); i += task.getNumberOfParallelSubtasks()) {
                    parts.add(bootstrap.get(i).clone());
                }
            }
        }

        @Override
        public void snapshotState(FunctionSnapshotContext context) throws Exception {
            state.update(parts);
            String job = getRuntimeContext().getJobInfo().getJobId().toString();
            if (!Exchange.exporting(exportRoot, job)) {
                return;
            }
            StringBuilder json = new StringBuilder("[");
            for (long[] part : parts) {
                json.append(json.length() > 1 ? "," : "").append('[').append(part[0]).append(',').append(part[1]).append(']');
            }
            String name = "source-" + uid + "-" + getRuntimeContext().getTaskInfo().getIndexOfThisSubtask() + ".json";
            Path file = Exchange.exportDir(exportRoot, job, context.getCheckpointId()).resolve(name);
            Exchange.writeText(file, json.append(']').toString());
        }

        /** Paces this subtask to its share of {@link #rate}. */
        Pace pace() {
            return new Pace(rate / getRuntimeContext().getTaskInfo().getNumberOfParallelSubtasks());
        }

        @Override
        public void cancel() {
            running = false;
        }
    }

    /** Paces a subtask to {@code rate} events per second (0: unpaced). */
    private static final class Pace {
        private final double perMs;
        private final long start = System.nanoTime();
        private long sent;

        Pace(double rate) {
            this.perMs = rate / 1000.0;
        }

        void one() throws InterruptedException {
            sent++;
            if (perMs > 0) {
                long dueMs = (long) (sent / perMs);
                long aheadMs = dueMs - (System.nanoTime() - start) / 1_000_000;
                if (aheadMs > 0) {
                    Thread.sleep(aheadMs);
                }
            }
        }
    }

    /** The {@code file} source: bytes {@code [from, to)} of the file are the lines that start there. */
    static final class FileSource extends PositionedSource {
        private static final long serialVersionUID = 1L;
        private final String path;
        private final String timestampField;
        private transient ObjectMapper json;

        FileSource(String uid, String path, String timestampField, double rate, List<long[]> bootstrap,
                String exportRoot) {
            super(uid, rate, bootstrap, exportRoot);
            this.path = path;
            this.timestampField = timestampField;
        }

        /** Bytes {@code [i/p, (i+1)/p)} of the file; the last subtask's to its end, whatever it is then. */
        @Override
        long[] fresh(org.apache.flink.api.common.TaskInfo task) {
            long length = new java.io.File(path).length();
            int p = task.getNumberOfParallelSubtasks();
            int i = task.getIndexOfThisSubtask();
            return new long[] {length * i / p, i == p - 1 ? Long.MAX_VALUE : length * (i + 1) / p};
        }

        @Override
        public void run(SourceContext<Event> ctx) throws Exception {
            json = new ObjectMapper();
            Pace pace = pace();
            try (RandomAccessFile file = new RandomAccessFile(path, "r")) {
                while (running && !parts.isEmpty()) {
                    long[] range = parts.get(0);
                    long at = lineStart(file, range[0]);
                    file.seek(at);
                    java.io.ByteArrayOutputStream line = new java.io.ByteArrayOutputStream();
                    while (running && at < range[1]) {
                        line.reset();
                        long next = readLine(file, at, line);
                        if (next == at) {
                            break;
                        }
                        Event event = event(line.toByteArray());
                        synchronized (ctx.getCheckpointLock()) {
                            if (event.timed) {
                                ctx.collectWithTimestamp(event, event.time);
                            } else {
                                ctx.collect(event);
                            }
                            range[0] = next;
                        }
                        at = next;
                        pace.one();
                    }
                    if (running) {
                        synchronized (ctx.getCheckpointLock()) {
                            parts.remove(0);
                        }
                    }
                }
            }
        }

        /** Where the first line that starts at or after {@code from} starts. */
        private static long lineStart(RandomAccessFile file, long from) throws IOException {
            if (from == 0) {
                return 0;
            }
            file.seek(from - 1);
            int b;
            long at = from - 1;
            while ((b = file.read()) != -1) {
                at++;
                if (b == '\n') {
                    return at;
                }
            }
            return at;
        }

        /** Reads the line at {@code at} into {@code line} (without its break); the next line's start. */
        private static long readLine(RandomAccessFile file, long at, java.io.ByteArrayOutputStream line)
                throws IOException {
            byte[] one = new byte[8192];
            long pos = at;
            while (true) {
                int n = file.read(one);
                if (n <= 0) {
                    return pos;
                }
                for (int i = 0; i < n; i++) {
                    pos++;
                    if (one[i] == '\n') {
                        file.seek(pos);
                        byte[] bytes = line.toByteArray();
                        line.reset();
                        int end = bytes.length > 0 && bytes[bytes.length - 1] == '\r' ? bytes.length - 1 : bytes.length;
                        line.write(bytes, 0, end);
                        return pos;
                    }
                    line.write(one[i]);
                }
            }
        }

        private Event event(byte[] line) {
            if (timestampField == null) {
                return new Event(null, false, 0, line);
            }
            try {
                JsonNode field = json.readTree(line).get(timestampField);
                if (field != null && field.canConvertToLong()) {
                    return new Event(null, true, field.asLong(), line);
                }
            } catch (IOException e) {
                // Not JSON: an event without event time, as weir's file source reads it.
            }
            return new Event(null, false, 0, line);
        }

    }

    /** The {@code generator} source: subtask s of p makes the indices i ≡ s (mod p) below count. */
    static final class Generator extends PositionedSource {
        private static final long serialVersionUID = 1L;
        private final long count;
        private final long keys;
        /** Event i's timestamp is i × this in nanoseconds, in whole milliseconds (0: none). */
        private final long stepNs;

        /** Its parts are progressions {next, step}. */
        Generator(String uid, long count, long keys, long stepNs, double rate, List<long[]> bootstrap,
                String exportRoot) {
            super(uid, rate, bootstrap, exportRoot);
            this.count = count;
            this.keys = Math.max(1, keys);
            this.stepNs = stepNs;
        }

        /** The indices i ≡ index (mod parallelism). */
        @Override
        long[] fresh(org.apache.flink.api.common.TaskInfo task) {
            return new long[] {task.getIndexOfThisSubtask(), task.getNumberOfParallelSubtasks()};
        }

        @Override
        public void run(SourceContext<Event> ctx) throws Exception {
            Pace pace = pace();
            while (running && !parts.isEmpty()) {
                // Round robin over its progressions, so that one restored from several subtasks
                // advances them alike.
                for (int p = 0; p < parts.size() && running; p++) {
                    long[] progression = parts.get(p);
                    long i = progression[0];
                    synchronized (ctx.getCheckpointLock()) {
                        if (i >= count) {
                            parts.remove(p);
                            p--;
                            continue;
                        }
                        byte[] key = ("k" + (i % keys)).getBytes(StandardCharsets.UTF_8);
                        byte[] value = ("{\"seq\":" + i + "}").getBytes(StandardCharsets.UTF_8);
                        if (stepNs > 0) {
                            long time = Math.multiplyHigh(i, stepNs) == 0 && i * stepNs >= 0
                                    ? i * stepNs / 1_000_000
                                    : Long.MAX_VALUE;
                            ctx.collectWithTimestamp(new Event(key, true, time, value), time);
                        } else {
                            ctx.collect(new Event(key, false, 0, value));
                        }
                        progression[0] = i > Long.MAX_VALUE - progression[1] ? Long.MAX_VALUE : i + progression[1];
                    }
                    pace.one();
                }
            }
        }
    }

    /** The {@code file} sink's lines: each event's value and a line break. */
    static final class Lines implements Encoder<Event> {
        private static final long serialVersionUID = 1L;

        @Override
        public void encode(Event event, java.io.OutputStream out) throws IOException {
            out.write(event.value);
            out.write('\n');
        }
    }
}
