package weir.flink;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

/**
 * An upgrade `weir flink upgrade` asks of a running job (host/src/flink/upgrade.rs): its control
 * file {@code <exports>/<job id>/control/upgrade.json} names the request's number, the checkpoint
 * at whose barrier every subtask switches, and each operator's new module; a rolled-back request
 * is not (or no longer) carried out. Subtasks acknowledge a switch with a file beside it.
 */
record Upgrade(long n, long at, String module, boolean rolledBack) {
    private static final ObjectMapper JSON = new ObjectMapper();

    static Path controlDir(String exportRoot, String jobId) {
        return Path.of(exportRoot, jobId, "control");
    }

    /** The request for operator {@code uid} of job {@code jobId}, or null when there is none. */
    static Upgrade read(String exportRoot, String jobId, String uid) throws IOException {
        if (exportRoot == null) {
            return null;
        }
        Path file = controlDir(exportRoot, jobId).resolve("upgrade.json");
        if (!Files.exists(file)) {
            return null;
        }
        JsonNode request = JSON.readTree(Files.readAllBytes(file));
        JsonNode module = request.path("operators").path(uid);
        if (module.isMissingNode() || module.isNull()) {
            return null;
        }
        return new Upgrade(request.path("n").asLong(), request.path("at").asLong(), module.asText(),
                request.path("rolled-back").asBoolean(false));
    }

    /** Tells `weir flink upgrade` that subtask {@code subtask} of {@code uid} switched at {@code checkpoint}. */
    void acknowledge(String exportRoot, String jobId, String uid, int subtask, long checkpoint, double pauseMs)
            throws IOException {
        Path ack = controlDir(exportRoot, jobId).resolve("switched-" + n + "-" + uid + "-" + subtask + ".json");
        Exchange.writeText(ack, "{\"checkpoint\":" + checkpoint + ",\"pause-ms\":" + pauseMs + "}");
    }
}
