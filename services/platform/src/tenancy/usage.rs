//! Instance usage (number of users), a read model the tenancy side keeps from
//! identity events on the bus — the platform's own example of an idempotent
//! consumer. The admin API shows it per instance.

use async_trait::async_trait;
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1::Envelope;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr};

use crate::bus::topics;
use crate::consumer::Projection;
use crate::db::{self, col};

pub struct InstanceUsage;

pub const NAME: &str = "tenancy.instance_usage";

#[async_trait]
impl Projection for InstanceUsage {
    fn name(&self) -> &'static str {
        NAME
    }

    fn topics(&self) -> &'static [&'static str] {
        &[topics::IDENTITY]
    }

    async fn apply(&self, txn: &DatabaseTransaction, event: &Envelope) -> Result<(), DbErr> {
        let delta: i64 = match event.event_type.as_str() {
            et::USER_CREATED => 1,
            et::USER_DELETED => -1,
            _ => return Ok(()),
        };
        db::exec(
            txn,
            "INSERT INTO tenancy_instance_usage (instance_id, users_total, events_applied) \
             VALUES ($1, $2, 1) ON CONFLICT (instance_id) DO UPDATE SET \
             users_total = tenancy_instance_usage.users_total + $2, \
             events_applied = tenancy_instance_usage.events_applied + 1",
            vec![event.instance_id.clone().into(), delta.into()],
        )
        .await?;
        Ok(())
    }

    async fn reset(&self, txn: &DatabaseTransaction) -> Result<(), DbErr> {
        db::exec(txn, "DELETE FROM tenancy_instance_usage", vec![]).await?;
        Ok(())
    }
}

/// Users of an instance as the projection knows them.
pub async fn get(conn: &impl ConnectionTrait, instance_id: &str) -> Result<i64, DbErr> {
    Ok(
        match db::query_one(
            conn,
            "SELECT users_total FROM tenancy_instance_usage WHERE instance_id = $1",
            vec![instance_id.into()],
        )
        .await?
        {
            Some(r) => col(&r, "users_total")?,
            None => 0,
        },
    )
}
