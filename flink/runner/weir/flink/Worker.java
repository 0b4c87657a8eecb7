package weir.flink;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * One {@code weir worker} process serving one subtask's module over a Unix socket (see
 * host/src/wasm/worker.rs for the messages). The subtask listens and the worker connects, so a
 * worker that cannot start, dies or hangs is an exception here, which fails the Flink task: Flink
 * then restarts it from its last checkpoint.
 */
final class Worker implements AutoCloseable {
    static final int OPEN = 1, BATCH = 2, TIMERS = 3, MIGRATE = 5, BROADCAST = 6, SAVE_BROADCAST = 7,
            LOAD_BROADCAST = 8;
    /** What the worker's module said of itself when opened. */
    org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode opened;
    private static final int STATE_REPLY = 4;
    private static final int OPENED = 1, OUTPUT = 2, STATE = 3, ERROR = 9;
    /** How long a worker may take to start and connect (it compiles the module, once per machine). */
    private static final long CONNECT_MS = 120_000;

    private final Path dir;
    private final Path log;
    private final Process process;
    private final SocketChannel channel;
    private final Selector selector;
    private final String label;
    /** Longest a reply may take: the module's call deadline, and a margin for the worker itself. */
    private final long replyMs;
    private final ByteBuffer header = ByteBuffer.allocate(5).order(ByteOrder.LITTLE_ENDIAN);

    Worker(String weir, String label, long callDeadlineMs) throws IOException {
        this.label = label;
        this.replyMs = callDeadlineMs + 30_000;
        dir = Files.createTempDirectory("weir-worker-");
        Path socket = dir.resolve("s");
        log = dir.resolve("worker.log");
        ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(socket));
        try {
            ProcessBuilder builder = new ProcessBuilder(weir, "worker", "--socket", socket.toString());
            builder.redirectErrorStream(true).redirectOutput(log.toFile());
            try {
                process = builder.start();
            } catch (IOException e) {
                throw new IOException("cannot start the weir worker '" + weir + "' for " + label + ": " + e.getMessage()
                        + " (the plan names the weir binary that submitted the job; it must be at that path on every"
                        + " TaskManager's machine)", e);
            }
            server.configureBlocking(false);
            long until = System.currentTimeMillis() + CONNECT_MS;
            SocketChannel accepted = null;
            while (accepted == null) {
                accepted = server.accept();
                if (accepted != null) {
                    break;
                }
                if (!process.isAlive()) {
                    throw new IOException("the weir worker for " + label + " exited with status " + process.exitValue()
                            + " before it connected: " + tail());
                }
                if (System.currentTimeMillis() > until) {
                    process.destroyForcibly();
                    throw new IOException("the weir worker for " + label + " did not connect within "
                            + CONNECT_MS / 1000 + " s: " + tail());
                }
                Thread.sleep(5);
            }
            channel = accepted;
            channel.configureBlocking(false);
            selector = Selector.open();
            channel.register(selector, SelectionKey.OP_READ);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while starting the weir worker for " + label, e);
        } finally {
            server.close();
            Files.deleteIfExists(socket);
        }
    }

    /** What the worker wrote last (its log), for an error message. */
    private String tail() {
        try {
            String text = Files.readString(log, StandardCharsets.UTF_8).strip();
            return text.isEmpty() ? "(it wrote nothing)" : text.substring(Math.max(0, text.length() - 2000));
        } catch (IOException e) {
            return "(its log is unreadable: " + e.getMessage() + ")";
        }
    }

    /** Answers the guest's map and list state requests during a call (host/src/wasm/worker/remote.rs). */
    interface StateRequests {
        byte[] answer(byte[] request) throws Exception;
    }

    /** Sends one message and returns the reply's body; a worker's error is a {@link WorkerError}. */
    byte[] call(int tag, byte[] body) throws IOException {
        return call(tag, body, null);
    }

    /**
     * Sends one message and returns the reply's body, answering the state requests the guest
     * makes meanwhile with {@code state}.
     */
    byte[] call(int tag, byte[] body, StateRequests state) throws IOException {
        send(tag, body);
        while (true) {
            byte[] reply = receive();
            if (lastKind != STATE) {
                return checked(tag, reply);
            }
            try {
                if (state == null) {
                    throw new IllegalStateException("a state request outside a batch (a weir bug)");
                }
                send(STATE_REPLY, state.answer(reply));
            } catch (IOException e) {
                throw e;
            } catch (Exception e) {
                send(ERROR, String.valueOf(e.getMessage()).getBytes(StandardCharsets.UTF_8));
            }
        }
    }

    private int lastKind;

    private void send(int tag, byte[] body) throws IOException {
        ByteBuffer out = ByteBuffer.allocate(5).order(ByteOrder.LITTLE_ENDIAN);
        out.put((byte) tag).putInt(body.length).flip();
        write(out);
        write(ByteBuffer.wrap(body));
    }

    private byte[] receive() throws IOException {
        header.clear();
        read(header);
        header.flip();
        int kind = header.get() & 0xFF;
        int length = header.getInt();
        if (length < 0) {
            throw new IOException("the weir worker for " + label + " sent a message of more than 2 GiB");
        }
        ByteBuffer reply = ByteBuffer.allocate(length);
        read(reply);
        lastKind = kind;
        return reply.array();
    }

    private byte[] checked(int tag, byte[] bytes) throws IOException {
        int kind = lastKind;
        if (kind == ERROR) {
            throw new WorkerError(label + ": " + new String(bytes, StandardCharsets.UTF_8));
        }
        if (kind != (tag == OPEN ? OPENED : OUTPUT)) {
            throw new IOException("the weir worker for " + label + " answered with message " + kind + " (a weir bug)");
        }
        return bytes;
    }

    private void write(ByteBuffer buf) throws IOException {
        while (buf.hasRemaining()) {
            if (channel.write(buf) == 0) {
                wait(SelectionKey.OP_WRITE);
            }
        }
    }

    private void read(ByteBuffer buf) throws IOException {
        while (buf.hasRemaining()) {
            int n = channel.read(buf);
            if (n < 0) {
                throw new IOException("the weir worker for " + label + " closed the connection"
                        + (process.isAlive() ? "" : " (it exited with status " + exitValue() + ")") + ": " + tail());
            }
            if (n == 0) {
                wait(SelectionKey.OP_READ);
            }
        }
    }

    private int exitValue() {
        try {
            return process.waitFor();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return -1;
        }
    }

    private void wait(int op) throws IOException {
        channel.keyFor(selector).interestOps(op);
        if (selector.select(replyMs) == 0) {
            process.destroyForcibly();
            throw new IOException("the weir worker for " + label + " did not answer within " + replyMs / 1000
                    + " s (it hangs, or its machine is overloaded); stopped it");
        }
        selector.selectedKeys().clear();
    }

    @Override
    public void close() {
        try {
            selector.close();
            channel.close();
        } catch (IOException ignored) {
            // The worker is being stopped anyway.
        }
        process.destroy();
        try {
            if (!process.waitFor(2, java.util.concurrent.TimeUnit.SECONDS)) {
                process.destroyForcibly();
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
        }
        try {
            Files.deleteIfExists(log);
            Files.deleteIfExists(dir);
        } catch (IOException ignored) {
            // A temporary directory left behind is harmless.
        }
    }

    /** A guest call that failed in the worker (a trap, the deadline, a malformed frame). */
    static final class WorkerError extends IOException {
        WorkerError(String message) {
            super(message);
        }
    }
}
