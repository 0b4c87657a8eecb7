package weir.flink;

import java.io.Serializable;
import java.util.List;

/** What one Wasm operator of the plan is: its module, configuration, sandbox and shape. */
final class OperatorSpec implements Serializable {
    private static final long serialVersionUID = 1L;

    final String uid;
    final String module;
    /** Its configuration, a JSON object as text, passed to the guest's {@code open}. */
    final String config;
    /** The minor version of weir:operator the module was built against: 2, 3 or 4. */
    final int contract;
    final List<String> sideOutputs;
    /** Whether its input is keyed (a hash input): only then does it have keyed state and timers. */
    final boolean keyed;
    final String weir;
    final long callDeadlineMs;
    final long memoryLimit;
    /** A state exchange file to load on a fresh start (the job starts from a weir savepoint), or null. */
    final String bootstrap;
    /** The weir savepoint's broadcast state of the operator (JSON) to load on a fresh start, or null. */
    final String bootstrapBroadcast;
    /** Where savepoints' exports go (host/src/flink/savepoints.rs). */
    final String exportRoot;

    OperatorSpec(String uid, String module, String config, int contract, List<String> sideOutputs, boolean keyed,
            String weir, long callDeadlineMs, long memoryLimit, String bootstrap, String bootstrapBroadcast,
            String exportRoot) {
        this.uid = uid;
        this.module = module;
        this.config = config;
        this.contract = contract;
        this.sideOutputs = sideOutputs;
        this.keyed = keyed;
        this.weir = weir;
        this.callDeadlineMs = callDeadlineMs;
        this.memoryLimit = memoryLimit;
        this.bootstrap = bootstrap;
        this.bootstrapBroadcast = bootstrapBroadcast;
        this.exportRoot = exportRoot;
    }
}
