//! Group-less topic reading ([`choreo_bus::reader`]), with the command
//! line's progress bar.

pub use choreo_bus::reader::{list_topics, Record, Start, TopicReader};

use crate::output::Progress;

/// Every record of `topics`, from the beginning up to the current end.
pub async fn read_to_end(
    brokers: &str,
    topics: &[String],
    progress: &mut Progress,
) -> anyhow::Result<Vec<Record>> {
    let mut total_set = false;
    let records = choreo_bus::reader::read_to_end(brokers, topics, |_, total| {
        if !total_set {
            progress.set_total(Some(total));
            total_set = true;
        }
        progress.inc(1);
    })
    .await?;
    progress.finish();
    Ok(records)
}
