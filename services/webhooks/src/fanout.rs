//! The fan-out: the webhooks service's own consumer group reads the public
//! topics and turns every public event into one message per instance
//! (`webhooks_messages`, keyed by the source event id, so a redelivered
//! event changes nothing) and one queued delivery per matching endpoint
//! (`webhooks_deliveries`), in the consumer's transaction.

use async_trait::async_trait;
use gatehouse_platform::Platform;
use gatehouse_platform::bus::topics;
use gatehouse_platform::consumer::Projection;
use gatehouse_platform::db::{self, col};
use gatehouse_proto::v1::Envelope;
use sea_orm::{DatabaseTransaction, DbErr};

use crate::catalog;

pub const NAME: &str = "webhooks.fanout";

pub struct FanOut {
    pub platform: Platform,
}

/// Whether an endpoint with these filter types (JSON list; empty: all)
/// takes this event type.
fn wants(filter_json: &str, event_type: &str) -> bool {
    let filter: Vec<String> = serde_json::from_str(filter_json).unwrap_or_default();
    filter.is_empty() || filter.iter().any(|t| t == event_type)
}

#[async_trait]
impl Projection for FanOut {
    fn name(&self) -> &'static str {
        NAME
    }

    fn topics(&self) -> &'static [&'static str] {
        &[topics::IDENTITY, topics::OAUTH]
    }

    async fn apply(&self, txn: &DatabaseTransaction, ev: &Envelope) -> Result<(), DbErr> {
        if !catalog::is_public(&ev.event_type) {
            return Ok(());
        }
        let Some(data) =
            catalog::data(&self.platform, &ev.instance_id, &ev.event_type, &ev.payload)
        else {
            tracing::warn!(event_type = %ev.event_type, event_id = %ev.event_id, "undecodable public event skipped");
            return Ok(());
        };
        let body = catalog::body(data, &ev.event_type, ev.occurred_at_ms, &ev.instance_id);
        let message_id = format!("msg_{}", gatehouse_platform::ids::random_base62(22));
        let now = self.platform.now_ms();
        let inserted = db::exec(
            txn,
            "INSERT INTO webhooks_messages (id, instance_id, event_type, body, source_event_id, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (source_event_id) DO NOTHING",
            vec![
                message_id.clone().into(),
                ev.instance_id.clone().into(),
                ev.event_type.clone().into(),
                body.to_string().into(),
                ev.event_id.clone().into(),
                now.into(),
            ],
        )
        .await?;
        if inserted == 0 {
            return Ok(());
        }
        let endpoints = db::query_all(
            txn,
            "SELECT id, filter_types FROM webhooks_endpoints WHERE instance_id = $1 AND NOT disabled",
            vec![ev.instance_id.clone().into()],
        )
        .await?;
        let mut rows = Vec::new();
        let mut values: Vec<sea_orm::Value> =
            vec![message_id.into(), ev.instance_id.clone().into(), now.into()];
        for r in endpoints {
            let (id, filter): (String, String) = (col(&r, "id")?, col(&r, "filter_types")?);
            if wants(&filter, &ev.event_type) {
                values.push(id.into());
                rows.push(format!(
                    "($1, ${}, $2, 'pending', 0, $3, $3, $3)",
                    values.len()
                ));
            }
        }
        if !rows.is_empty() {
            db::exec(
                txn,
                &format!(
                    "INSERT INTO webhooks_deliveries (message_id, endpoint_id, instance_id, \
                     status, attempts, next_attempt_at, created_at, updated_at) VALUES {}",
                    rows.join(", ")
                ),
                values,
            )
            .await?;
        }
        Ok(())
    }

    /// Messages are keyed by their source event: a replay adds nothing, so
    /// there is nothing to empty.
    async fn reset(&self, _txn: &DatabaseTransaction) -> Result<(), DbErr> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_filters_take_everything() {
        assert!(wants("[]", "user.created"));
        assert!(wants(r#"["user.created"]"#, "user.created"));
        assert!(!wants(r#"["user.deleted"]"#, "user.created"));
    }
}
