//! The SQL participant, on SQLite. SQLite has no PREPARE TRANSACTION, so a
//! prepare stores the transaction's statements durably in
//! `ferry_2pc_prepared` (after a trial run proved they apply), and a commit
//! runs them, deletes the prepared row and records the xid in
//! `ferry_2pc_applied`, all in one database transaction, which makes a
//! commit idempotent: recovery may repeat it safely.
//!
//! Deferring the statements is sound because every write to the
//! participant's tables goes through the one coordinator, one transaction
//! at a time; another writer changing them between prepare and commit could
//! make a commit fail, which is reported as a heuristic hazard, never hidden.

use std::path::Path;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, ToSql, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::participant::{Participant, SqlSession};
use crate::idempotent::open_durable_sqlite;
use crate::{ClientError, Result};

/// A value bound to a statement parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
}

impl ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(match self {
            SqlValue::Null => Value::Null,
            SqlValue::Integer(i) => Value::Integer(*i),
            SqlValue::Real(r) => Value::Real(*r),
            SqlValue::Text(t) => Value::Text(t.clone()),
        }))
    }
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> SqlValue {
        SqlValue::Integer(v)
    }
}
impl From<&str> for SqlValue {
    fn from(v: &str) -> SqlValue {
        SqlValue::Text(v.to_string())
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> SqlValue {
        SqlValue::Text(v)
    }
}
impl From<f64> for SqlValue {
    fn from(v: f64) -> SqlValue {
        SqlValue::Real(v)
    }
}

/// One statement of a transaction's database effect. It must be
/// deterministic: it runs once as a trial at prepare and again at commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlStatement {
    pub sql: String,
    pub params: Vec<SqlValue>,
}

impl SqlStatement {
    pub fn new(sql: &str, params: Vec<SqlValue>) -> SqlStatement {
        SqlStatement { sql: sql.to_string(), params }
    }

    pub(crate) fn execute(&self, connection: &Connection) -> rusqlite::Result<usize> {
        connection.execute(&self.sql, params_from_iter(self.params.iter()))
    }
}

/// A SQLite database as a two-phase-commit participant.
pub struct SqliteParticipant {
    connection: Connection,
}

/// One batch's open SQLite transaction. Statements run inside a savepoint
/// (the trial) so later messages of the batch see earlier effects; prepare
/// rolls the trial back and stores the statements instead.
pub struct SqliteBatch<'a> {
    tx: Transaction<'a>,
}

impl SqlSession for SqliteBatch<'_> {
    fn query(&mut self, sql: &str, params: &[SqlValue]) -> std::result::Result<Vec<Vec<SqlValue>>, String> {
        let mut statement = self.tx.prepare(sql).map_err(|e| e.to_string())?;
        let columns = statement.column_count();
        let rows = statement
            .query_map(params_from_iter(params.iter()), |row| {
                (0..columns)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            ValueRef::Null => SqlValue::Null,
                            ValueRef::Integer(v) => SqlValue::Integer(v),
                            ValueRef::Real(v) => SqlValue::Real(v),
                            ValueRef::Text(v) => SqlValue::Text(String::from_utf8_lossy(v).into_owned()),
                            ValueRef::Blob(v) => SqlValue::Text(String::from_utf8_lossy(v).into_owned()),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<SqlValue>>>()
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| e.to_string())
    }

    fn execute(&mut self, statement: &SqlStatement) -> std::result::Result<(), String> {
        statement.execute(&self.tx).map(|_| ()).map_err(|e| e.to_string())
    }
}

impl SqliteParticipant {
    /// Opens (or creates) the database at `path` (WAL, `synchronous=FULL`).
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteParticipant> {
        let connection = open_durable_sqlite(path.as_ref())?;
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS ferry_2pc_prepared (
                 xid INTEGER PRIMARY KEY,
                 statements TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS ferry_2pc_applied (
                 xid INTEGER PRIMARY KEY
             );",
        )?;
        Ok(SqliteParticipant { connection })
    }

    /// The database, for the application's schema and reads.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl Participant for SqliteParticipant {
    type Batch<'a> = SqliteBatch<'a>;

    fn begin(&mut self) -> Result<SqliteBatch<'_>> {
        // IMMEDIATE: the write lock for the whole batch, so nothing changes
        // what the trial saw before the statements are stored.
        let tx = self.connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch("SAVEPOINT ferry_trial")?;
        Ok(SqliteBatch { tx })
    }

    fn prepare(batch: SqliteBatch<'_>, xid: u64, statements: &[SqlStatement]) -> Result<()> {
        let tx = batch.tx;
        tx.execute_batch("ROLLBACK TO ferry_trial; RELEASE ferry_trial")?;
        let json = serde_json::to_string(statements).expect("statements serialize");
        tx.execute("INSERT INTO ferry_2pc_prepared (xid, statements) VALUES (?1, ?2)", params![xid as i64, json])?;
        tx.commit()?;
        Ok(())
    }

    fn commit(&mut self, xid: u64) -> Result<bool> {
        let tx = self.connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let prepared: Option<String> = tx
            .query_row("SELECT statements FROM ferry_2pc_prepared WHERE xid = ?1", params![xid as i64], |r| r.get(0))
            .optional()?;
        let Some(json) = prepared else {
            let applied: Option<i64> = tx
                .query_row("SELECT xid FROM ferry_2pc_applied WHERE xid = ?1", params![xid as i64], |r| r.get(0))
                .optional()?;
            return match applied {
                Some(_) => Ok(false),
                None => Err(ClientError::Heuristic {
                    xid,
                    reason: "decided commit, but the database holds neither its prepared nor its applied record".into(),
                }),
            };
        };
        let statements: Vec<SqlStatement> = serde_json::from_str(&json)
            .map_err(|e| ClientError::Heuristic { xid, reason: format!("prepared statements unreadable: {e}") })?;
        for statement in &statements {
            statement.execute(&tx).map_err(|e| ClientError::Heuristic {
                xid,
                reason: format!("a prepared statement failed at commit ({}): {e}", statement.sql),
            })?;
        }
        tx.execute("DELETE FROM ferry_2pc_prepared WHERE xid = ?1", params![xid as i64])?;
        tx.execute("INSERT INTO ferry_2pc_applied (xid) VALUES (?1)", params![xid as i64])?;
        tx.commit()?;
        Ok(true)
    }

    fn abort(&mut self, xid: u64) -> Result<()> {
        self.connection.execute("DELETE FROM ferry_2pc_prepared WHERE xid = ?1", params![xid as i64])?;
        Ok(())
    }

    fn prepared(&mut self) -> Result<Vec<u64>> {
        let mut statement = self.connection.prepare("SELECT xid FROM ferry_2pc_prepared ORDER BY xid")?;
        let xids = statement.query_map([], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(xids.into_iter().map(|x| x as u64).collect())
    }

    fn forget_applied_below(&mut self, xid: u64) -> Result<()> {
        self.connection.execute("DELETE FROM ferry_2pc_applied WHERE xid < ?1", params![xid as i64])?;
        Ok(())
    }
}
