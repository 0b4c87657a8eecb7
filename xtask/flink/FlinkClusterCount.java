// Flink's own keyed count, submitted to the same cluster as the Wasm `count` on the Flink runner
// (`cargo xtask bench --only flink`): the runner's generator (event i: key "k<i mod keys>", value
// {"seq":i}, subtask s of p making i ≡ s mod p) → keyBy → a KeyedProcessFunction keeping a
// ValueState<Long> count and emitting {"key":…,"count":…} as the Wasm count does → a discarding
// sink, checkpointing every 2 s as the runner does by default.
//
// Arguments: n=<events> k=<keys> p=<parallelism>.
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.functions.source.legacy.RichParallelSourceFunction;
import org.apache.flink.util.Collector;

public class FlinkClusterCount {
    public static final class Gen extends RichParallelSourceFunction<Tuple2<String, byte[]>> {
        private final long n, keys;
        private volatile boolean running = true;

        Gen(long n, long keys) {
            this.n = n;
            this.keys = keys;
        }

        @Override
        public void run(SourceContext<Tuple2<String, byte[]>> ctx) {
            var task = getRuntimeContext().getTaskInfo();
            int p = task.getNumberOfParallelSubtasks();
            for (long i = task.getIndexOfThisSubtask(); i < n && running; i += p) {
                Tuple2<String, byte[]> event = Tuple2.of("k" + (i % keys), ("{\"seq\":" + i + "}").getBytes(StandardCharsets.UTF_8));
                synchronized (ctx.getCheckpointLock()) {
                    ctx.collect(event);
                }
            }
        }

        @Override
        public void cancel() {
            running = false;
        }
    }

    public static final class Count extends KeyedProcessFunction<String, Tuple2<String, byte[]>, byte[]> {
        private transient ValueState<Long> count;

        @Override
        public void open(OpenContext context) {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
        }

        @Override
        public void processElement(Tuple2<String, byte[]> event, Context ctx, Collector<byte[]> out) throws Exception {
            Long previous = count.value();
            long next = previous == null ? 1 : previous + 1;
            count.update(next);
            out.collect(("{\"key\":\"" + event.f0 + "\",\"count\":" + next + "}").getBytes(StandardCharsets.UTF_8));
        }
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (String arg : args) {
            String[] kv = arg.split("=", 2);
            a.put(kv[0], kv[1]);
        }
        long n = Long.parseLong(a.get("n")), k = Long.parseLong(a.get("k"));
        int p = Integer.parseInt(a.get("p"));
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(p);
        env.setMaxParallelism(128);
        env.enableCheckpointing(2000);
        env.addSource(new Gen(n, k), "events", Types.TUPLE(Types.STRING, PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO))
                .keyBy(e -> e.f0, Types.STRING)
                .process(new Count())
                .returns(PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO)
                .sinkTo(new DiscardingSink<>());
        env.execute("flink-cluster-count");
    }
}
