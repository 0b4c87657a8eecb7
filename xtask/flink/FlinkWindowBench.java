// Flink 2.3 event-time tumbling-window count, the counterpart of weir's window bench
// (`cargo xtask bench`): the same workload in the same run, compiled against the Flink anchor's
// FLINK_HOME (../shared/anchors/flink/setup.sh) by the bench.
//
// Pipeline: fromSequence(0, n-1) -> (key = i % k, event time = i * stepNanos / 1e6 ms, monotonous
//           watermarks) -> keyBy(key) -> TumblingEventTimeWindows(size) -> count (incremental
//           AggregateFunction) -> DiscardingSink, heap state, parallelism p.
//
// Args (key=value): n=20000000 k=100000 p=1 sizeMs=10000 stepNanos=1000
// Prints: RESULT throughput_eps=<events from the first record to the job's end, per second> windows=<emitted>
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

public class FlinkWindowBench {
    static final AtomicLong FIRST_NS = new AtomicLong();
    static final AtomicLong WINDOWS = new AtomicLong();

    public static final class Keyed extends RichMapFunction<Long, Tuple2<Long, Long>> {
        final long k, stepNanos;
        Keyed(long k, long stepNanos) { this.k = k; this.stepNanos = stepNanos; }
        @Override public void open(OpenContext ctx) {}
        @Override public Tuple2<Long, Long> map(Long i) {
            if (i < 16) FIRST_NS.compareAndSet(0, System.nanoTime());
            return Tuple2.of(i % k, i * stepNanos / 1_000_000L);
        }
    }

    public static final class Count implements AggregateFunction<Tuple2<Long, Long>, Long, Long> {
        @Override public Long createAccumulator() { return 0L; }
        @Override public Long add(Tuple2<Long, Long> v, Long acc) { return acc + 1; }
        @Override public Long getResult(Long acc) { WINDOWS.incrementAndGet(); return acc; }
        @Override public Long merge(Long a, Long b) { return a + b; }
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (String s : argv) { int e = s.indexOf('='); a.put(s.substring(0, e), s.substring(e + 1)); }
        long n = Long.parseLong(a.getOrDefault("n", "20000000"));
        long k = Long.parseLong(a.getOrDefault("k", "100000"));
        int p = Integer.parseInt(a.getOrDefault("p", "1"));
        long sizeMs = Long.parseLong(a.getOrDefault("sizeMs", "10000"));
        long stepNanos = Long.parseLong(a.getOrDefault("stepNanos", "1000"));

        Configuration conf = new Configuration();
        conf.setString("state.backend.type", "hashmap");
        conf.setString("rest.bind-port", "0");
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(p, conf);
        TypeInformation<Tuple2<Long, Long>> tt = Types.TUPLE(Types.LONG, Types.LONG);
        env.fromSequence(0, n - 1).uid("src")
           .map(new Keyed(k, stepNanos)).returns(tt).uid("keyed")
           .assignTimestampsAndWatermarks(WatermarkStrategy.<Tuple2<Long, Long>>forMonotonousTimestamps()
                   .withTimestampAssigner((t, ts) -> t.f1))
           .keyBy(t -> t.f0, Types.LONG)
           .window(TumblingEventTimeWindows.of(Duration.ofMillis(sizeMs)))
           .aggregate(new Count()).uid("windows")
           .sinkTo(new DiscardingSink<>()).uid("sink");
        env.execute("flink-window-bench");
        long end = System.nanoTime();
        double seconds = (end - FIRST_NS.get()) / 1e9;
        System.out.printf("RESULT throughput_eps=%.0f windows=%d seconds=%.3f%n", n / seconds, WINDOWS.get(), seconds);
    }
}
