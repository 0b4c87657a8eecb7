package weir.flink;

import java.io.IOException;

import org.apache.flink.api.common.serialization.SerializerConfig;
import org.apache.flink.api.common.typeinfo.TypeInfoFactory;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeutils.SimpleTypeSerializerSnapshot;
import org.apache.flink.api.common.typeutils.TypeSerializer;
import org.apache.flink.api.common.typeutils.TypeSerializerSnapshot;
import org.apache.flink.api.common.typeutils.base.TypeSerializerSingleton;
import org.apache.flink.core.memory.DataInputView;
import org.apache.flink.core.memory.DataOutputView;

/**
 * Flink's serializer of {@link Event}s: flags, then the key, time and value as they are. Events are
 * never changed once emitted, so Flink passes them between chained operators without copying
 * them (a POJO serializer copied each one field by field, through reflection).
 */
public final class EventSerializer extends TypeSerializerSingleton<Event> {
    private static final long serialVersionUID = 1L;
    static final EventSerializer INSTANCE = new EventSerializer();
    private static final int KEYED = 1, TIMED = 2;

    @Override
    public boolean isImmutableType() {
        return true;
    }

    @Override
    public Event createInstance() {
        return new Event();
    }

    @Override
    public Event copy(Event from) {
        return from;
    }

    @Override
    public Event copy(Event from, Event reuse) {
        return from;
    }

    @Override
    public int getLength() {
        return -1;
    }

    @Override
    public void serialize(Event event, DataOutputView out) throws IOException {
        out.writeByte((event.key != null ? KEYED : 0) | (event.timed ? TIMED : 0));
        out.writeByte(event.input);
        if (event.key != null) {
            out.writeInt(event.key.length);
            out.write(event.key);
        }
        if (event.timed) {
            out.writeLong(event.time);
        }
        out.writeInt(event.value.length);
        out.write(event.value);
    }

    @Override
    public Event deserialize(DataInputView in) throws IOException {
        int flags = in.readByte();
        Event event = new Event();
        event.input = in.readByte() & 0xFF;
        if ((flags & KEYED) != 0) {
            event.key = new byte[in.readInt()];
            in.readFully(event.key);
        }
        if ((flags & TIMED) != 0) {
            event.timed = true;
            event.time = in.readLong();
        }
        event.value = new byte[in.readInt()];
        in.readFully(event.value);
        return event;
    }

    @Override
    public Event deserialize(Event reuse, DataInputView in) throws IOException {
        return deserialize(in);
    }

    @Override
    public void copy(DataInputView in, DataOutputView out) throws IOException {
        serialize(deserialize(in), out);
    }

    @Override
    public TypeSerializerSnapshot<Event> snapshotConfiguration() {
        return new Snapshot();
    }

    /** What savepoints record of the serializer: nothing but that it is this one. */
    public static final class Snapshot extends SimpleTypeSerializerSnapshot<Event> {
        public Snapshot() {
            super(() -> INSTANCE);
        }
    }

    /** {@link Event}'s type information, found by Flink through {@code @TypeInfo} on the class. */
    public static final class Factory extends TypeInfoFactory<Event> {
        @Override
        public TypeInformation<Event> createTypeInfo(java.lang.reflect.Type type,
                java.util.Map<String, TypeInformation<?>> parameters) {
            return new Info();
        }
    }

    /** {@link Event}'s type information: a single field-less type serialized by {@link EventSerializer}. */
    public static final class Info extends TypeInformation<Event> {
        private static final long serialVersionUID = 1L;

        @Override
        public boolean isBasicType() {
            return false;
        }

        @Override
        public boolean isTupleType() {
            return false;
        }

        @Override
        public int getArity() {
            return 1;
        }

        @Override
        public int getTotalFields() {
            return 1;
        }

        @Override
        public Class<Event> getTypeClass() {
            return Event.class;
        }

        @Override
        public boolean isKeyType() {
            return false;
        }

        @Override
        public TypeSerializer<Event> createSerializer(SerializerConfig config) {
            return INSTANCE;
        }

        @Override
        public String toString() {
            return "weir event";
        }

        @Override
        public boolean equals(Object other) {
            return other instanceof Info;
        }

        @Override
        public int hashCode() {
            return Info.class.hashCode();
        }

        @Override
        public boolean canEqual(Object other) {
            return other instanceof Info;
        }
    }
}
