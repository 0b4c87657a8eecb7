//! The uploader: stores snapshots as operators hand them over, off their threads, so that they go
//! on processing (the asynchronous part of a checkpoint).
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::runtime::control::{Ack, Control, Upload};

/// Stores each snapshot, then acknowledges it for its subtask, until `None` arrives.
pub(crate) fn upload(uploads: Receiver<Option<Upload>>, control: &Control) {
    'uploads: while let Ok(Some(Upload { id, snapshots, mut ack })) = uploads.recv() {
        // A checkpoint abandoned meanwhile needs nothing stored.
        let Some(sink) = control.target(id) else { continue };
        let started = Instant::now();
        for snapshot in snapshots {
            match sink.write_state(id, &ack.uid, ack.subtask, snapshot) {
                Ok((file, uploaded)) => {
                    ack.stats.state_size += file.stored.size();
                    ack.stats.checkpointed_size += uploaded;
                    ack.states.push(file);
                }
                Err(cause) => {
                    control.ack(Ack::Failed(id, cause));
                    continue 'uploads;
                }
            }
        }
        ack.stats.upload = started.elapsed();
        control.ack(Ack::Task(id, Box::new(ack)));
    }
}
