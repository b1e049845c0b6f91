//! Database access shared by every service: connecting (PostgreSQL in
//! production, SQLite in the embedded default), raw statements written once
//! with `$N` placeholders (both drivers accept them), and write transactions.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqlErr, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait, Value,
};

/// Connects and checks the connection, with an error that names the problem.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10));
    if url.starts_with("sqlite:") {
        // One file, several readers, one writer at a time (WAL). Writers wait
        // for each other instead of failing with SQLITE_BUSY.
        opts.max_connections(4)
            .min_connections(1)
            .map_sqlx_sqlite_opts(|o| {
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
    } else {
        opts.max_connections(40).min_connections(2);
    }
    let db = Database::connect(opts).await?;
    db.ping().await?;
    Ok(db)
}

/// A statement for this connection's backend from SQL with `$1…$N` placeholders.
pub fn stmt(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(db.get_database_backend(), sql, values)
}

pub fn is_postgres(db: &impl ConnectionTrait) -> bool {
    db.get_database_backend() == DbBackend::Postgres
}

/// Begins a transaction that will write. On SQLite it takes the write lock at
/// BEGIN, so two writers queue on the busy timeout instead of deadlocking
/// when both try to upgrade a read transaction.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        isolation_level: None,
        access_mode: None,
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
    })
    .await
}

pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// Executes and returns the number of rows affected.
pub async fn exec(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Result<u64, DbErr> {
    Ok(db.execute_raw(stmt(db, sql, values)).await?.rows_affected())
}

pub async fn query_all(
    db: &impl ConnectionTrait,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
    db.query_all_raw(stmt(db, sql, values)).await
}

pub async fn query_one(
    db: &impl ConnectionTrait,
    sql: &str,
    values: Vec<Value>,
) -> Result<Option<sea_orm::QueryResult>, DbErr> {
    db.query_one_raw(stmt(db, sql, values)).await
}

/// `$from, $from+1, …`: `n` numbered parameters, for an `IN (…)` list or
/// one row of a multi-row `VALUES`.
pub fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `INSERT INTO <into> VALUES (…), (…)`: many rows in one statement,
/// `into` being the table with its column list. Nothing for no rows.
pub async fn insert_rows(
    db: &impl ConnectionTrait,
    into: &str,
    rows: Vec<Vec<Value>>,
) -> Result<u64, DbErr> {
    let Some(width) = rows.first().map(Vec::len) else {
        return Ok(0);
    };
    let mut values = Vec::with_capacity(rows.len() * width);
    let mut tuples = Vec::with_capacity(rows.len());
    for row in rows {
        if row.len() != width {
            return Err(DbErr::Custom(format!(
                "insert into {into}: rows of {width} and {} values",
                row.len()
            )));
        }
        tuples.push(format!("({})", placeholders(values.len() + 1, width)));
        values.extend(row);
    }
    let sql = format!("INSERT INTO {into} VALUES {}", tuples.join(", "));
    exec(db, &sql, values).await
}

/// Reads a column by name, converting the driver's error into a `DbErr`.
pub fn col<T: sea_orm::TryGetable>(row: &sea_orm::QueryResult, name: &str) -> Result<T, DbErr> {
    row.try_get("", name)
}

/// The URL with any password masked, safe to print in logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_password_only() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:./data/g.db"), "sqlite:./data/g.db");
    }
}
