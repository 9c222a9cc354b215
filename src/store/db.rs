//! The two databases behind the store: SQLite (an embedded file, the default) and PostgreSQL (for
//! several replicas). The SQL is the same text for both (`$N` placeholders, `ON CONFLICT`, counts
//! rather than sums so both return BIGINT); only connecting and the migration set differ.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, sqlite::SqlitePoolOptions};

use super::StoreError;
use super::record::{CallRecord, CardRow, FeedbackRow};

/// A connection pool to one of the two databases.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same statement text on whichever pool `$db` holds (sqlx's types differ per database, the
/// code does not).
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// The migrations, compiled in so a deployment needs no file beside the binary.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "store",
    include_str!("../../migrations/sqlite/0001_store.sql"),
)];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "store",
    include_str!("../../migrations/postgres/0001_store.sql"),
)];

#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<Vec<Migration>, Box<dyn std::error::Error + Send + Sync>>,
                > + Send
                + 's,
        >,
    > {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Rows per multi-row INSERT: 64 cards × 12 columns stays far below SQLite's and PostgreSQL's
/// limits on bound parameters.
const ROWS_PER_STATEMENT: usize = 64;

/// What the writer stores per card: counted from the rows actually inserted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub calls: u64,
    pub cards: u64,
}

impl Db {
    /// Connects to `url` (`postgres://…`, `sqlite:…`), or to the SQLite file `default_file` when
    /// `url` is `None`; creates the file if needed and applies the migrations.
    pub async fn open(
        url: Option<&str>,
        default_file: &Path,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let db = match url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(url)
                    .await
                    .map_err(|e| StoreError::Open(e.to_string()))?;
                Self::Postgres(pool)
            }
            Some(url) if url.starts_with("sqlite:") => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|e| StoreError::Open(e.to_string()))?;
                Self::Sqlite(sqlite_pool(options, max_connections).await?)
            }
            Some(_) => {
                return Err(StoreError::Open(
                    "store.url must start with `sqlite:` or `postgres://`".into(),
                ));
            }
            None => {
                if let Some(dir) = default_file.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Open(format!("{} cannot be created: {e}", dir.display()))
                    })?;
                }
                let options = SqliteConnectOptions::new().filename(default_file);
                Self::Sqlite(sqlite_pool(options, max_connections).await?)
            }
        };
        db.migrate().await?;
        Ok(db)
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrations = match self {
            Self::Sqlite(_) => SQLITE_MIGRATIONS,
            Self::Postgres(_) => POSTGRES_MIGRATIONS,
        };
        let migrator = Migrator::new(Embedded(migrations))
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        let result = on_pool!(self, pool => migrator.run(pool).await);
        result.map_err(|e| StoreError::Migrate(e.to_string()))
    }

    /// Writes the calls and their cards in one transaction, many rows per statement (a statement is
    /// a round trip to the database, or to SQLite's worker thread). A card already there (a retried
    /// batch) is skipped.
    pub async fn write_calls(&self, calls: &[CallRecord]) -> Result<Written, sqlx::Error> {
        let cards: Vec<(&CallRecord, &CardRow)> = calls
            .iter()
            .flat_map(|call| call.cards.iter().map(move |card| (call, card)))
            .collect();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut written = Written::default();
            for chunk in calls.chunks(ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO calls (id, service_id, rule_set, called_at, hook_instance) ",
                );
                insert.push_values(chunk, |mut row, call| {
                    row.push_bind(&call.id)
                        .push_bind(&call.service_id)
                        .push_bind(&call.rule_set)
                        .push_bind(call.called_at)
                        .push_bind(&call.hook_instance);
                });
                insert.push(" ON CONFLICT DO NOTHING");
                written.calls += insert.build().execute(&mut *tx).await?.rows_affected();
            }
            for chunk in cards.chunks(ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO cards (uuid, call_id, service_id, rule_id, rule_version, rule_set, \
                     mode, indicator, summary, issued_at, hook_instance, patient_key) ",
                );
                insert.push_values(chunk, |mut row, (call, card)| {
                    row.push_bind(&card.uuid)
                        .push_bind(&call.id)
                        .push_bind(&call.service_id)
                        .push_bind(&card.rule_id)
                        .push_bind(&card.rule_version)
                        .push_bind(&call.rule_set)
                        .push_bind(card.mode)
                        .push_bind(&card.indicator)
                        .push_bind(&card.summary)
                        .push_bind(call.called_at)
                        .push_bind(&call.hook_instance)
                        .push_bind(&call.patient_key);
                });
                insert.push(" ON CONFLICT DO NOTHING");
                written.cards += insert.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            Ok(written)
        })
    }

    /// The service that was returned the card `uuid` (silent, candidate and suppressed cards were
    /// never returned, so they do not count).
    pub async fn card_service(&self, uuid: &str) -> Result<Option<String>, sqlx::Error> {
        on_pool!(self, pool => {
            let row = sqlx::query("SELECT service_id FROM cards WHERE uuid = $1 AND mode = 'active'")
                .bind(uuid)
                .fetch_optional(pool)
                .await?;
            row.map(|row| row.try_get::<String, _>("service_id")).transpose()
        })
    }

    /// Stores the feedback entries in one transaction, committed (durable) before it returns; an
    /// entry already stored (same card, outcome and timestamp) is skipped. Returns how many were new.
    pub async fn write_feedback(&self, rows: &[FeedbackRow]) -> Result<u64, sqlx::Error> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut stored = 0;
            for row in rows {
                stored += sqlx::query(
                    "INSERT INTO feedback (card_uuid, outcome, outcome_timestamp, override_system, \
                     override_code, override_display, accepted_suggestions, received_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                )
                .bind(&row.card_uuid)
                .bind(row.outcome)
                .bind(&row.outcome_timestamp)
                .bind(&row.override_system)
                .bind(&row.override_code)
                .bind(&row.override_display)
                .bind(row.accepted_suggestions)
                .bind(row.received_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            Ok(stored)
        })
    }

    /// Deletes calls, cards and feedback older than `before` (Unix ms). Returns the cards deleted.
    pub async fn purge(&self, before: i64) -> Result<u64, sqlx::Error> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "DELETE FROM feedback WHERE card_uuid IN (SELECT uuid FROM cards WHERE issued_at < $1)",
            )
            .bind(before)
            .execute(&mut *tx)
            .await?;
            let cards = sqlx::query("DELETE FROM cards WHERE issued_at < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM calls WHERE called_at < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(cards)
        })
    }

    /// Rows of `sql` (bound to `from` and `to`, Unix ms) as JSON-like values, for the analytics.
    pub async fn rows(
        &self,
        sql: &str,
        from: i64,
        to: i64,
        columns: &[(&str, Column)],
    ) -> Result<Vec<Vec<Value>>, sqlx::Error> {
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(from).bind(to).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let mut values = Vec::with_capacity(columns.len());
                for (name, column) in columns {
                    values.push(match column {
                        Column::Text => Value::Text(row.try_get::<Option<String>, _>(*name)?),
                        Column::Int => Value::Int(row.try_get::<Option<i64>, _>(*name)?.unwrap_or(0)),
                    });
                }
                out.push(values);
            }
            Ok(out)
        })
    }
}

/// The type of a column the analytics read.
#[derive(Debug, Clone, Copy)]
pub enum Column {
    Text,
    Int,
}

/// A value the analytics read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(Option<String>),
    Int(i64),
}

impl Value {
    pub fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone().unwrap_or_default(),
            Self::Int(i) => i.to_string(),
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Self::Int(i) => *i,
            Self::Text(_) => 0,
        }
    }
}

/// WAL (readers never wait for the writer) and a synchronous commit: what is acknowledged stays.
async fn sqlite_pool(
    options: SqliteConnectOptions,
    max_connections: u32,
) -> Result<SqlitePool, StoreError> {
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        // The indexes' pages stay in memory rather than being read back from the OS on every
        // batch (SQLite's default cache is 2 MB); negative: KiB.
        .pragma("cache_size", "-32768")
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Open(e.to_string()))
}
