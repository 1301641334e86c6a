//! The consumer group's callbacks: readiness once the group has taken this
//! member in, and what each rebalance did, in the log.

use rdkafka::consumer::{ConsumerContext, Rebalance};
use rdkafka::ClientContext;
use tracing::{info, warn};

use super::Readiness;

pub(super) struct GroupContext {
    pub(super) service: String,
    pub(super) readiness: Readiness,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(service = %self.service, partitions = tpl.count(), "partitions assigned");
                // Ready once the group has taken this member in, even with
                // no partitions: replicas may outnumber partitions.
                self.readiness.set();
            }
            Rebalance::Revoke(tpl) => {
                info!(service = %self.service, partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Error(e) => warn!(service = %self.service, error = %e, "rebalance error"),
        }
    }
}
