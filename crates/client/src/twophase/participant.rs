//! What a database must do to take part in two-phase commit, and what a
//! handler sees of it while a batch is open.

use super::sqlite::{SqlStatement, SqlValue};
use crate::Result;

/// The handler's view of the database inside an open batch: reads see the
/// batch's earlier statements.
pub trait SqlSession {
    /// Runs a query; each row as a list of values.
    fn query(&mut self, sql: &str, params: &[SqlValue]) -> std::result::Result<Vec<Vec<SqlValue>>, String>;
    /// Runs one of the batch's statements (the coordinator calls this).
    fn execute(&mut self, statement: &SqlStatement) -> std::result::Result<(), String>;

    /// The first column of the first row, as an integer (None: no row or NULL).
    fn query_i64(&mut self, sql: &str, params: &[SqlValue]) -> std::result::Result<Option<i64>, String> {
        Ok(self.query(sql, params)?.into_iter().next().and_then(|row| match row.into_iter().next() {
            Some(SqlValue::Integer(v)) => Some(v),
            _ => None,
        }))
    }
}

/// A database participant. Its prepare must be durable (it survives a
/// crash of this process and of the database) and its commit idempotent
/// (recovery may repeat it); a participant must know, after a crash, which
/// xids it holds prepared.
pub trait Participant {
    /// One batch's open database transaction.
    type Batch<'a>: SqlSession
    where
        Self: 'a;

    fn begin(&mut self) -> Result<Self::Batch<'_>>;
    /// Makes the batch durable under `xid`, neither applied nor lost.
    fn prepare(batch: Self::Batch<'_>, xid: u64, statements: &[SqlStatement]) -> Result<()>;
    /// Applies prepared `xid`; false when it was applied before.
    fn commit(&mut self, xid: u64) -> Result<bool>;
    /// Drops prepared `xid` (nothing to do when it was never prepared).
    fn abort(&mut self, xid: u64) -> Result<()>;
    /// The xids prepared and not yet committed or aborted.
    fn prepared(&mut self) -> Result<Vec<u64>>;
    /// Forgets the applied marks of xids below `xid`: the decision log no longer names them.
    fn forget_applied_below(&mut self, xid: u64) -> Result<()>;
}
