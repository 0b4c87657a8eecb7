package weir.flink;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.file.sink.FileSink;
import org.apache.flink.core.fs.Path;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.KeyedStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.PrintSink;
import org.apache.flink.streaming.api.functions.sink.filesystem.bucketassigners.BasePathBucketAssigner;
import org.apache.flink.streaming.api.functions.sink.filesystem.rollingpolicies.OnCheckpointRollingPolicy;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;

/**
 * A weir job on Flink: the plan {@code weir flink run} made of a job file (base64 JSON, the one
 * program argument) becomes a DataStream job. Sources, Wasm operators and sinks keep their uids,
 * so Flink matches their state across savepoints as weir does; a hash input is a keyBy on the
 * event key with the job's max parallelism.
 */
public final class WeirFlinkJob {
    private static final TypeInformation<Event> EVENTS = TypeInformation.of(Event.class);

    private WeirFlinkJob() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            throw new IllegalArgumentException("usage: WeirFlinkJob PLAN (base64 JSON, made by `weir flink run`)");
        }
        JsonNode plan = new ObjectMapper().readTree(Base64.getDecoder().decode(args[0]));
        Configuration config = new Configuration();
        config.setString("state.backend.type", plan.path("state-backend").asText("hashmap"));
        if (plan.hasNonNull("checkpoint-dir")) {
            config.setString("execution.checkpointing.dir", plan.get("checkpoint-dir").asText());
        }
        if (plan.path("incremental").asBoolean(false)) {
            config.setString("execution.checkpointing.incremental", "true");
        }
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(config);
        env.setParallelism(plan.get("parallelism").asInt());
        env.setMaxParallelism(plan.get("max-parallelism").asInt());
        env.enableCheckpointing(plan.get("checkpoint-interval-ms").asLong());

        Map<String, DataStream<Event>> streams = new HashMap<>();
        for (JsonNode source : plan.get("sources")) {
            streams.put(source.get("uid").asText(), source(env, source, text(plan, "export-dir")));
        }
        String weir = plan.get("worker").asText();
        for (JsonNode operator : plan.get("operators")) {
            String uid = operator.get("uid").asText();
            List<String> sideOutputs = new ArrayList<>();
            operator.get("side-outputs").forEach(name -> sideOutputs.add(name.asText()));
            boolean keyed = false;
            for (JsonNode input : operator.get("inputs")) {
                keyed |= input.get("partitioning").asText().equals("hash");
            }
            OperatorSpec spec = new OperatorSpec(uid, operator.get("module").asText(), operator.get("config").asText(),
                    operator.get("contract").asInt(), sideOutputs, keyed, weir,
                    operator.get("call-deadline-ms").asLong(), operator.get("memory-limit").asLong(),
                    text(operator, "bootstrap"), text(operator, "bootstrap-broadcast"), text(plan, "export-dir"));
            int parallelism = operator.get("parallelism").asInt();
            boolean tagged = operator.get("contract").asInt() >= 4;
            SingleOutputStreamOperator<Event> out;
            if (keyed) {
                // Keyed inputs go through keyBy; broadcast ones reach every subtask beside them
                // (Flink's broadcast state pattern: the two inputs of one operator).
                KeyedStream<Event, String> input = inputs(operator, streams, tagged, false)
                        .keyBy(event -> Event.flinkKey(event.key), TypeInformation.of(String.class));
                DataStream<Event> broadcast = inputs(operator, streams, tagged, true);
                out = broadcast == null ? input.transform(uid, EVENTS, new WasmOperator(spec))
                        : input.connect(broadcast.broadcast()).transform(uid, EVENTS, new WasmOperator(spec));
            } else {
                out = inputs(operator, streams, tagged, null).transform(uid, EVENTS, new WasmOperator(spec));
            }
            out.uid(uid).setParallelism(parallelism);
            DataStream<Event> main = out;
            if (operator.hasNonNull("watermarks")) {
                main = out.assignTimestampsAndWatermarks(watermarks(operator.get("watermarks")))
                        .uid(uid + "-watermarks").setParallelism(parallelism);
            }
            streams.put(uid, main);
            for (String name : sideOutputs) {
                streams.put(uid + "." + name, out.getSideOutput(WasmOperator.sideOutputTag(uid, name)));
            }
        }
        for (JsonNode sink : plan.get("sinks")) {
            sink(inputs(sink, streams, false, null), sink);
        }
        env.execute(plan.get("name").asText());
    }

    /** A text field, or null. */
    private static String text(JsonNode node, String field) {
        return node.hasNonNull(field) ? node.get(field).asText() : null;
    }

    /** A source's positions from a weir savepoint ([from, to] ranges, or [next, step] progressions), or null. */
    private static List<long[]> parts(JsonNode source) {
        if (!source.hasNonNull("bootstrap")) {
            return null;
        }
        List<long[]> parts = new ArrayList<>();
        source.get("bootstrap").forEach(p -> parts.add(new long[] {p.get(0).asLong(), p.get(1).asLong()}));
        return parts;
    }

    /**
     * What a vertex reads, as one stream: its inputs read by broadcast ({@code broadcast} true),
     * the others (false), or all (null), each tagged with its index when the reader tells them
     * apart; null when there are none.
     */
    private static DataStream<Event> inputs(JsonNode vertex, Map<String, DataStream<Event>> streams, boolean tagged,
            Boolean broadcast) {
        DataStream<Event> all = null;
        int index = 0;
        for (JsonNode input : vertex.get("inputs")) {
            final int i = index++;
            String partitioning = input.get("partitioning").asText();
            if (broadcast != null && broadcast != partitioning.equals("broadcast")) {
                continue;
            }
            DataStream<Event> stream = streams.get(input.get("from").asText());
            if (tagged && i > 0) {
                stream = stream.map(event -> event.onInput(i)).returns(EVENTS)
                        .name(vertex.get("uid").asText() + "-input-" + i);
            }
            if (partitioning.equals("rebalance")) {
                stream = stream.rebalance();
            } else if (partitioning.equals("broadcast") && broadcast == null) {
                stream = stream.broadcast();
            }
            all = all == null ? stream : all.union(stream);
        }
        return all;
    }

    private static WatermarkStrategy<Event> watermarks(JsonNode spec) {
        WatermarkStrategy<Event> strategy = WatermarkStrategy
                .<Event>forBoundedOutOfOrderness(Duration.ofMillis(spec.path("out-of-orderness-ms").asLong(0)))
                .withTimestampAssigner((event, previous) -> event.timed ? event.time : previous);
        if (spec.hasNonNull("idle-timeout-ms")) {
            strategy = strategy.withIdleness(Duration.ofMillis(spec.get("idle-timeout-ms").asLong()));
        }
        return strategy;
    }

    private static DataStream<Event> source(StreamExecutionEnvironment env, JsonNode source, String exportRoot) {
        String uid = source.get("uid").asText();
        double rate = source.path("rate").asDouble(0);
        SingleOutputStreamOperator<Event> stream = switch (source.get("type").asText()) {
            case "file" -> env.addSource(new Connectors.FileSource(uid, source.get("path").asText(),
                    text(source, "timestamp-field"), rate, parts(source), exportRoot), uid, EVENTS);
            case "generator" -> env.addSource(new Connectors.Generator(uid,
                    source.hasNonNull("count") ? source.get("count").asLong() : Long.MAX_VALUE,
                    source.path("keys").asLong(1000), source.path("event-time-step-ns").asLong(0), rate, parts(source),
                    exportRoot), uid, EVENTS);
            default -> throw new IllegalArgumentException("source '" + uid + "': unsupported type");
        };
        stream.uid(uid).setParallelism(source.get("parallelism").asInt());
        if (source.hasNonNull("watermarks")) {
            return stream.assignTimestampsAndWatermarks(watermarks(source.get("watermarks")))
                    .uid(uid + "-watermarks").setParallelism(source.get("parallelism").asInt());
        }
        return stream;
    }

    private static void sink(DataStream<Event> stream, JsonNode sink) {
        String uid = sink.get("uid").asText();
        var out = switch (sink.get("type").asText()) {
            case "file" -> stream.sinkTo(FileSink.forRowFormat(new Path(sink.get("path").asText()), new Connectors.Lines())
                    .withBucketAssigner(new BasePathBucketAssigner<>())
                    .withRollingPolicy(OnCheckpointRollingPolicy.build())
                    .build());
            case "stdout" -> stream.sinkTo(new PrintSink<>());
            case "blackhole" -> stream.sinkTo(new DiscardingSink<>());
            default -> throw new IllegalArgumentException("sink '" + uid + "': unsupported type");
        };
        out.name(uid).uid(uid);
    }
}
