// Flink 2.3 event-time temporal join, the counterpart of weir's `enrich` bench (`cargo xtask
// bench`): the same files joined the same way in the same run, compiled against the Flink
// anchor's FLINK_HOME (../shared/anchors/flink/setup.sh) by the bench.
//
// Pipeline: clicks.jsonl ({"ts","user","page"}) and profiles.jsonl ({"ts","user","plan"}), each a
//           FileSource of text lines -> parsed (Jackson) -> timestamps from "ts", monotonous
//           watermarks -> keyBy(user); connected -> KeyedCoProcessFunction: a profile is kept as a
//           version valid from its ts (ValueState<TreeMap>), a click waits in ValueState<List>
//           for an event-time timer at its ts, then goes out with the plan valid at it as JSON,
//           or, without one, as it came to the side output "unmatched" (OutputTag); both to
//           DiscardingSinks. Heap state, parallelism p.
//
// Args (key=value): clicks=PATH profiles=PATH p=1
// Prints: RESULT throughput_eps=<clicks from the first click read to the job's end, per second>
//         enriched=<n> unmatched=<n>
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeHint;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.file.src.FileSource;
import org.apache.flink.connector.file.src.reader.TextLineInputFormat;
import org.apache.flink.core.fs.Path;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.co.KeyedCoProcessFunction;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;

public class FlinkJoinBench {
    static final AtomicLong FIRST_NS = new AtomicLong();
    static final AtomicLong ENRICHED = new AtomicLong();
    static final AtomicLong UNMATCHED = new AtomicLong();
    static final OutputTag<String> UNMATCHED_TAG = new OutputTag<>("unmatched", Types.STRING);

    /// A line as (ts, user, the line itself); `field` is "page" or "plan", kept as the third.
    public static final class Parse extends RichMapFunction<String, Tuple3<Long, String, String>> {
        final boolean clicks;
        transient ObjectMapper json;
        Parse(boolean clicks) { this.clicks = clicks; }
        @Override public void open(OpenContext ctx) { json = new ObjectMapper(); }
        @Override public Tuple3<Long, String, String> map(String line) throws Exception {
            if (clicks) FIRST_NS.compareAndSet(0, System.nanoTime());
            JsonNode node = json.readTree(line);
            String third = clicks ? line : node.get("plan").asText();
            return Tuple3.of(node.get("ts").asLong(), node.get("user").asText(), third);
        }
    }

    public static final class Join
            extends KeyedCoProcessFunction<String, Tuple3<Long, String, String>, Tuple3<Long, String, String>, String> {
        transient ValueState<TreeMap<Long, String>> profiles;
        transient ValueState<ArrayList<Tuple3<Long, String, String>>> pending;
        transient ObjectMapper json;

        @Override public void open(OpenContext ctx) {
            profiles = getRuntimeContext().getState(
                    new ValueStateDescriptor<>("profiles", TypeInformation.of(new TypeHint<TreeMap<Long, String>>() {})));
            pending = getRuntimeContext().getState(new ValueStateDescriptor<>(
                    "pending", TypeInformation.of(new TypeHint<ArrayList<Tuple3<Long, String, String>>>() {})));
            json = new ObjectMapper();
        }

        @Override public void processElement1(Tuple3<Long, String, String> click, Context ctx, Collector<String> out)
                throws Exception {
            ArrayList<Tuple3<Long, String, String>> waiting = pending.value();
            if (waiting == null) waiting = new ArrayList<>();
            waiting.add(click);
            pending.update(waiting);
            ctx.timerService().registerEventTimeTimer(click.f0);
        }

        @Override public void processElement2(Tuple3<Long, String, String> profile, Context ctx, Collector<String> out)
                throws Exception {
            TreeMap<Long, String> versions = profiles.value();
            if (versions == null) versions = new TreeMap<>();
            versions.put(profile.f0, profile.f2);
            profiles.update(versions);
        }

        @Override public void onTimer(long time, OnTimerContext ctx, Collector<String> out) throws Exception {
            ArrayList<Tuple3<Long, String, String>> waiting = pending.value();
            if (waiting == null) return;
            TreeMap<Long, String> versions = profiles.value();
            ArrayList<Tuple3<Long, String, String>> later = new ArrayList<>();
            for (Tuple3<Long, String, String> click : waiting) {
                if (click.f0 > time) { later.add(click); continue; }
                Map.Entry<Long, String> valid = versions == null ? null : versions.floorEntry(click.f0);
                if (valid == null) {
                    ctx.output(UNMATCHED_TAG, click.f2);
                    UNMATCHED.incrementAndGet();
                } else {
                    JsonNode fields = json.readTree(click.f2);
                    out.collect(new StringBuilder(96).append("{\"ts\":").append(click.f0)
                            .append(",\"user\":").append(json.writeValueAsString(fields.get("user").asText()))
                            .append(",\"page\":").append(json.writeValueAsString(fields.get("page").asText()))
                            .append(",\"plan\":").append(json.writeValueAsString(valid.getValue())).append('}').toString());
                    ENRICHED.incrementAndGet();
                }
            }
            if (later.isEmpty()) pending.clear(); else pending.update(later);
            if (versions != null && versions.floorKey(time) != null) {
                TreeMap<Long, String> kept = new TreeMap<>(versions.tailMap(versions.floorKey(time), true));
                if (kept.size() < versions.size()) profiles.update(kept);
            }
        }
    }

    static DataStream<Tuple3<Long, String, String>> read(StreamExecutionEnvironment env, String path, boolean clicks) {
        TypeInformation<Tuple3<Long, String, String>> tt = Types.TUPLE(Types.LONG, Types.STRING, Types.STRING);
        String name = clicks ? "clicks" : "profiles";
        FileSource<String> file = FileSource.forRecordStreamFormat(new TextLineInputFormat(), new Path(path)).build();
        return env.fromSource(file, WatermarkStrategy.noWatermarks(), name).uid(name)
                .map(new Parse(clicks)).returns(tt).uid(name + "-parsed")
                .assignTimestampsAndWatermarks(WatermarkStrategy.<Tuple3<Long, String, String>>forMonotonousTimestamps()
                        .withTimestampAssigner((t, ts) -> t.f0));
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (String s : argv) { int e = s.indexOf('='); a.put(s.substring(0, e), s.substring(e + 1)); }
        int p = Integer.parseInt(a.getOrDefault("p", "1"));
        Configuration conf = new Configuration();
        conf.setString("state.backend.type", "hashmap");
        conf.setString("rest.bind-port", "0");
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(p, conf);
        SingleOutputStreamOperator<String> joined = read(env, a.get("clicks"), true).keyBy(t -> t.f1, Types.STRING)
                .connect(read(env, a.get("profiles"), false).keyBy(t -> t.f1, Types.STRING))
                .process(new Join()).returns(Types.STRING).uid("enrich");
        joined.sinkTo(new DiscardingSink<>()).uid("enriched");
        joined.getSideOutput(UNMATCHED_TAG).sinkTo(new DiscardingSink<>()).uid("unmatched");
        env.execute("flink-join-bench");
        long end = System.nanoTime();
        double seconds = (end - FIRST_NS.get()) / 1e9;
        long clicks = ENRICHED.get() + UNMATCHED.get();
        System.out.printf("RESULT throughput_eps=%.0f enriched=%d unmatched=%d seconds=%.3f%n",
                clicks / seconds, ENRICHED.get(), UNMATCHED.get(), seconds);
    }
}
