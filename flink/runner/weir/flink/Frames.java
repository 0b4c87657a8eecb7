package weir.flink;

import java.util.ArrayList;
import java.util.List;

/**
 * The batch frames of docs/batch-frames.md on the Flink side: input and timer frames built from
 * buffered events and their keys' Flink state, output frames read back into emits, value-state
 * writes and timer operations. {@code contract} is the minor version of weir:operator the module
 * was built against (2, 3 or 4): 0.3.0 adds time to the header, event flags and timer operations,
 * 0.4.0 an input per event and an output per emitted event.
 */
final class Frames {
    static final int ABSENT = 0xFFFF_FFFF;
    static final long NO_WATERMARK = Long.MIN_VALUE;

    private Frames() {}

    /** A growable little-endian byte buffer, reused from frame to frame. */
    static final class Writer {
        private byte[] buf = new byte[1 << 16];
        private int len;

        void reset() {
            len = 0;
        }

        int length() {
            return len;
        }

        byte[] toArray() {
            return java.util.Arrays.copyOf(buf, len);
        }

        private void room(int n) {
            if (len + n > buf.length) {
                buf = java.util.Arrays.copyOf(buf, Math.max(buf.length * 2, len + n));
            }
        }

        void u8(int v) {
            room(1);
            buf[len++] = (byte) v;
        }

        void u32(int v) {
            room(4);
            buf[len++] = (byte) v;
            buf[len++] = (byte) (v >>> 8);
            buf[len++] = (byte) (v >>> 16);
            buf[len++] = (byte) (v >>> 24);
        }

        void i64(long v) {
            room(8);
            for (int i = 0; i < 8; i++) {
                buf[len++] = (byte) (v >>> (8 * i));
            }
        }

        void bytes(byte[] b) {
            u32(b.length);
            room(b.length);
            System.arraycopy(b, 0, buf, len, b.length);
            len += b.length;
        }

        void optBytes(byte[] b) {
            if (b == null) {
                u32(ABSENT);
            } else {
                bytes(b);
            }
        }

        void optTs(boolean present, long t) {
            u8(present ? 1 : 0);
            i64(present ? t : 0);
        }

        /** Overwrites the u32 at {@code at} (a count known only at the end). */
        void u32At(int at, int v) {
            for (int i = 0; i < 4; i++) {
                buf[at + i] = (byte) (v >>> (8 * i));
            }
        }
    }

    /** The header of an input or timer frame: its third count is events, or timers. */
    static void header(Writer w, int contract, int keys, int valueStates, int count, long watermark, long now) {
        w.u32(keys);
        w.u32(valueStates);
        w.u32(count);
        if (contract >= 3) {
            w.i64(watermark);
            w.i64(now);
        }
    }

    /** One key-table entry: the key, then each value state's current value (null: never set). */
    static void keyEntry(Writer w, byte[] key, byte[][] values) {
        w.bytes(key);
        for (byte[] value : values) {
            w.optBytes(value);
        }
    }

    /** One event: by slot when keyed ({@code slot} ≥ 0), else with its own key (absent: none). */
    static void event(Writer w, int contract, int slot, Event event, long watermark) {
        if (slot >= 0) {
            w.u32(slot);
        } else {
            w.u32(ABSENT);
            w.optBytes(event.key);
        }
        w.optTs(event.timed, event.time);
        if (contract >= 3) {
            w.u8(event.timed && watermark != NO_WATERMARK && event.time <= watermark ? 1 : 0);
        }
        if (contract >= 4) {
            w.u8(event.input);
        }
        w.bytes(event.value);
    }

    /** One due timer of a timer frame. */
    static void timer(Writer w, int slot, int domain, long time) {
        w.u32(slot);
        w.u8(domain);
        w.i64(time);
    }

    /** An emitted event, to the main output (0) or side output {@code output} − 1. */
    record Emit(int output, Event event) {}

    /** A value-state write: {@code value} null clears the state for the slot's key. */
    record Write(int slot, int state, byte[] value) {}

    /** A timer operation: bit 0 of {@code op} deletes, its bits 1.. are the domain. */
    record TimerOp(int slot, int op, long time) {
        boolean delete() {
            return (op & 1) != 0;
        }

        int domain() {
            return op >>> 1;
        }
    }

    /** An output frame, read. */
    record Output(List<Emit> emits, List<Write> writes, List<TimerOp> timerOps) {}

    /** A reader of little-endian frames that fails, naming what, on a truncated one. */
    static final class Reader {
        private final byte[] buf;
        private int at;

        Reader(byte[] buf) {
            this.buf = buf;
        }

        boolean done() {
            return at == buf.length;
        }

        private void need(int n) {
            if (at + n > buf.length || n < 0) {
                throw new IllegalArgumentException("the frame is truncated at byte " + at + " of " + buf.length);
            }
        }

        int u8() {
            need(1);
            return buf[at++] & 0xFF;
        }

        int u32() {
            need(4);
            int v = (buf[at] & 0xFF) | (buf[at + 1] & 0xFF) << 8 | (buf[at + 2] & 0xFF) << 16 | (buf[at + 3] & 0xFF) << 24;
            at += 4;
            return v;
        }

        long i64() {
            need(8);
            long v = 0;
            for (int i = 0; i < 8; i++) {
                v |= (long) (buf[at + i] & 0xFF) << (8 * i);
            }
            at += 8;
            return v;
        }

        byte[] bytes() {
            int n = u32();
            need(n);
            byte[] b = java.util.Arrays.copyOfRange(buf, at, at + n);
            at += n;
            return b;
        }

        byte[] optBytes() {
            int n = u32();
            if (n == ABSENT) {
                return null;
            }
            need(n);
            byte[] b = java.util.Arrays.copyOfRange(buf, at, at + n);
            at += n;
            return b;
        }
    }

    /** Reads an output frame of a module of {@code contract}. */
    static Output output(byte[] frame, int contract) {
        Reader r = new Reader(frame);
        int emitCount = r.u32();
        List<Emit> emits = new ArrayList<>(Math.min(emitCount, 1 << 16));
        for (int i = 0; i < emitCount; i++) {
            int output = contract >= 4 ? r.u8() : 0;
            byte[] key = r.optBytes();
            boolean timed = r.u8() != 0;
            long time = r.i64();
            emits.add(new Emit(output, new Event(key, timed, timed ? time : 0, r.bytes())));
        }
        int writeCount = r.u32();
        List<Write> writes = new ArrayList<>(Math.min(writeCount, 1 << 16));
        for (int i = 0; i < writeCount; i++) {
            writes.add(new Write(r.u32(), r.u32(), r.optBytes()));
        }
        List<TimerOp> timerOps = new ArrayList<>();
        if (contract >= 3) {
            int timerCount = r.u32();
            for (int i = 0; i < timerCount; i++) {
                timerOps.add(new TimerOp(r.u32(), r.u8(), r.i64()));
            }
        }
        if (!r.done()) {
            throw new IllegalArgumentException("the output frame has bytes after its end");
        }
        return new Output(emits, writes, timerOps);
    }
}
