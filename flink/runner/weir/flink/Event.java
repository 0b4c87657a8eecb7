package weir.flink;

import java.nio.charset.StandardCharsets;

/**
 * One event between the job's vertices, as weir's runtime carries it: an optional key, an optional
 * event time (milliseconds), the value, and which input of the reading operator it is on (set just
 * before an operator whose inputs are told apart). Never changed once emitted (see
 * {@link EventSerializer}, which Flink serializes it with).
 */
@org.apache.flink.api.common.typeinfo.TypeInfo(EventSerializer.Factory.class)
public class Event {
    public byte[] key;
    public boolean timed;
    public long time;
    public byte[] value;
    public int input;

    public Event() {}

    public Event(byte[] key, boolean timed, long time, byte[] value) {
        this.key = key;
        this.timed = timed;
        this.time = time;
        this.value = value;
    }

    /** The same event, on input {@code input} of the operator reading it. */
    public Event onInput(int input) {
        Event event = new Event(key, timed, time, value);
        event.input = input;
        return event;
    }

    /**
     * The key as Flink keys it: the key's bytes as ISO-8859-1 text, one char per byte, so that any
     * bytes round-trip exactly and Flink's own String serializer and hashing apply (keyBy refuses
     * byte[] keys).
     */
    public static String flinkKey(byte[] key) {
        return new String(key, StandardCharsets.ISO_8859_1);
    }

    /** The bytes of a key made by {@link #flinkKey}. */
    public static byte[] keyBytes(String key) {
        return key.getBytes(StandardCharsets.ISO_8859_1);
    }

    /** Its value as text: what the stdout sink prints. */
    @Override
    public String toString() {
        return new String(value, StandardCharsets.UTF_8);
    }
}
