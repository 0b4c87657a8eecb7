package weir.flink;

import java.io.BufferedOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * State moving between weir's runtime and Flink (host/src/flink/savepoints.rs says how): the
 * state exchange files Wasm operators load on a fresh start from a weir savepoint and write at a
 * savepoint, and where exports go.
 */
final class Exchange {
    static final byte[] MAGIC = "WEIRXCH1".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    static final int VALUE = 0, MAP_ENTRY = 1, LIST_ELEMENT = 2, TIMER = 3;

    private Exchange() {}

    /** Where a Flink job's exports of checkpoint {@code checkpointId} go. */
    static Path exportDir(String root, String jobId, long checkpointId) {
        return Path.of(root, jobId, Long.toString(checkpointId));
    }

    /** Whether `weir flink savepoint` or `stop` asked the sources of job {@code jobId} to export. */
    static boolean exporting(String root, String jobId) {
        return root != null && Files.exists(Path.of(root, jobId, "exporting"));
    }

    /** A state exchange file being written: in place once {@link #close}d. */
    static final class Writer implements AutoCloseable {
        private final Path target;
        private final Path partial;
        final DataOutputStream out;

        Writer(Path target) throws IOException {
            Files.createDirectories(target.getParent());
            this.target = target;
            this.partial = target.resolveSibling("." + target.getFileName() + ".partial");
            OutputStream stream = new BufferedOutputStream(Files.newOutputStream(partial), 1 << 16);
            out = new DataOutputStream(stream);
            out.write(MAGIC);
        }

        void entry(int item, byte[] key) throws IOException {
            out.writeByte(item);
            bytes(key);
        }

        void u32(int v) throws IOException {
            out.writeInt(Integer.reverseBytes(v));
        }

        void i64(long v) throws IOException {
            out.writeLong(Long.reverseBytes(v));
        }

        void bytes(byte[] b) throws IOException {
            u32(b.length);
            out.write(b);
        }

        @Override
        public void close() throws IOException {
            out.close();
            Files.move(partial, target, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        }
    }

    /** Writes a small text file in place, atomically. */
    static void writeText(Path target, String text) throws IOException {
        Files.createDirectories(target.getParent());
        Path partial = target.resolveSibling("." + target.getFileName() + ".partial");
        Files.writeString(partial, text);
        Files.move(partial, target, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }
}
