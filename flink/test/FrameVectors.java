package weir.flink;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

/**
 * The runner's frame codec against docs/frame-vectors.json, byte for byte: each input and timer
 * frame is read and written again by {@link Frames}' writer, each output frame read by
 * {@link Frames#output} and written again. Run by tests/flink.rs; prints one line per case and
 * exits non-zero on the first difference.
 */
public final class FrameVectors {
    private FrameVectors() {}

    public static void main(String[] args) throws Exception {
        JsonNode vectors = new ObjectMapper().readTree(Files.readAllBytes(Path.of(args[0])));
        int contract = Integer.parseInt(args[1]);
        HexFormat hex = HexFormat.of();
        for (JsonNode c : vectors.get("cases")) {
            byte[] input = hex.parseHex(c.get("input").asText());
            byte[] output = hex.parseHex(c.get("output").asText());
            boolean timers = c.get("call").asText().equals("on-timers");
            check(c, "input", input, rewriteInput(input, contract, timers));
            check(c, "output", output, rewriteOutput(Frames.output(output, contract), contract));
            System.out.println("ok: " + c.get("name").asText());
        }
    }

    private static void check(JsonNode c, String which, byte[] expected, byte[] written) {
        if (!java.util.Arrays.equals(expected, written)) {
            System.out.println("DIFFERENT " + which + " of " + c.get("name").asText() + ": expected "
                    + HexFormat.of().formatHex(expected) + ", wrote " + HexFormat.of().formatHex(written));
            System.exit(1);
        }
    }

    /** Reads an input or timer frame and writes it again through the runner's writer. */
    private static byte[] rewriteInput(byte[] frame, int contract, boolean timers) {
        Frames.Reader r = new Frames.Reader(frame);
        int keys = r.u32(), values = r.u32(), count = r.u32();
        long watermark = contract >= 3 ? r.i64() : 0, now = contract >= 3 ? r.i64() : 0;
        Frames.Writer w = new Frames.Writer();
        Frames.header(w, contract, keys, values, count, watermark, now);
        for (int k = 0; k < keys; k++) {
            byte[] key = r.bytes();
            byte[][] current = new byte[values][];
            for (int v = 0; v < values; v++) {
                current[v] = r.optBytes();
            }
            Frames.keyEntry(w, key, current);
        }
        for (int i = 0; i < count; i++) {
            if (timers) {
                Frames.timer(w, r.u32(), r.u8(), r.i64());
                continue;
            }
            int slot = r.u32();
            byte[] key = slot == Frames.ABSENT ? r.optBytes() : null;
            boolean timed = r.u8() != 0;
            long time = r.i64();
            int flags = contract >= 3 ? r.u8() : 0;
            int input = contract >= 4 ? r.u8() : 0;
            Event event = new Event(key, timed, time, r.bytes());
            event.input = input;
            // The writer derives the late flag from the watermark, as the host does.
            long mark = (flags & 1) != 0 ? Math.max(time, watermark) : watermark;
            Frames.event(w, contract, slot == Frames.ABSENT ? -1 : slot, event, mark);
        }
        if (!r.done()) {
            throw new IllegalStateException("bytes after the frame's end");
        }
        return w.toArray();
    }

    /** Writes a read output frame again. */
    private static byte[] rewriteOutput(Frames.Output out, int contract) {
        Frames.Writer w = new Frames.Writer();
        w.u32(out.emits().size());
        for (Frames.Emit emit : out.emits()) {
            if (contract >= 4) {
                w.u8(emit.output());
            }
            w.optBytes(emit.event().key);
            w.optTs(emit.event().timed, emit.event().time);
            w.bytes(emit.event().value);
        }
        w.u32(out.writes().size());
        for (Frames.Write write : out.writes()) {
            w.u32(write.slot());
            w.u32(write.state());
            w.optBytes(write.value());
        }
        if (contract >= 3) {
            w.u32(out.timerOps().size());
            for (Frames.TimerOp op : out.timerOps()) {
                w.u32(op.slot());
                w.u8(op.op());
                w.i64(op.time());
            }
        }
        return w.toArray();
    }
}
