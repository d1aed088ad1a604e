//! The SQL participant on PostgreSQL, with PostgreSQL's own two-phase
//! commit (feature `postgres`).
//!
//! A batch is an open PostgreSQL transaction: the coordinator executes each
//! message's statements in it as they are produced, so the handler's reads
//! (through [`SqlSession`]) see the batch's earlier effects, and the rows
//! they touch stay locked. Prepare inserts the xid into `ferry_2pc_applied`
//! and runs `PREPARE TRANSACTION '<prefix><xid>'`: from then on the
//! transaction survives a crash of this process and of the server, neither
//! applied nor lost, holding its locks. Commit is `COMMIT PREPARED`, abort
//! `ROLLBACK PREPARED`.
//!
//! Commit is idempotent: when the prepared transaction is gone, the
//! `ferry_2pc_applied` row, written inside it, tells a transaction that was
//! committed (the row is there: nothing to do) from one that never was
//! (a heuristic hazard, reported). Recovery lists the prepared xids from
//! `pg_prepared_xacts`.
//!
//! Unlike the SQLite participant, nothing is deferred or run twice: the
//! statements run once, in the transaction that commits.
//!
//! Global transaction ids are per PostgreSQL cluster, not per database:
//! every coordinator using a cluster needs its own gid prefix
//! ([`PostgresParticipant::with_gid_prefix`], e.g. its transactional.id),
//! or the recovery of one would roll back the other's prepared work.
//!
//! The server must allow prepared transactions (`max_prepared_transactions`
//! > 0; PostgreSQL's default is 0). Connections are plain TCP (`NoTls`).

use std::error::Error as StdError;

use postgres::error::SqlState;
use postgres::types::private::BytesMut;
use postgres::types::{FromSql, IsNull, ToSql, Type};
use postgres::{Client, NoTls};

use super::participant::{Participant, SqlSession};
use super::sqlite::{SqlStatement, SqlValue};
use crate::{ClientError, Result};

type BoxError = Box<dyn StdError + Sync + Send>;

/// The gid prefix used unless [`PostgresParticipant::with_gid_prefix`] sets another.
pub const DEFAULT_GID_PREFIX: &str = "ferry-";

/// Serializes the schema creation of concurrent connects (CREATE TABLE IF
/// NOT EXISTS races with itself in PostgreSQL).
const SCHEMA_LOCK_KEY: i64 = 0x6665_7272_7932_7063; // "ferry2pc"

/// A PostgreSQL error as a [`ClientError::Database`], keeping the
/// `postgres::Error` as its source.
pub(crate) fn pg_error(error: postgres::Error) -> ClientError {
    ClientError::Postgres(error)
}

/// A PostgreSQL database as a two-phase-commit participant.
pub struct PostgresParticipant {
    client: Client,
    url: String,
    gid_prefix: String,
}

/// One batch's open PostgreSQL transaction. Dropped without
/// [`Participant::prepare`], it is rolled back.
pub struct PostgresBatch<'a> {
    client: &'a mut Client,
    gid_prefix: &'a str,
    open: bool,
}

impl Drop for PostgresBatch<'_> {
    fn drop(&mut self) {
        if self.open {
            if let Err(error) = self.client.batch_execute("ROLLBACK") {
                tracing::warn!(%error, "rolling back an unprepared batch failed");
            }
        }
    }
}

fn bind(params: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl SqlSession for PostgresBatch<'_> {
    fn query(&mut self, sql: &str, params: &[SqlValue]) -> std::result::Result<Vec<Vec<SqlValue>>, String> {
        let rows = self.client.query(sql, &bind(params)).map_err(|e| describe(&e))?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.try_get::<_, PgValue>(i).map(|v| v.0).map_err(|e| describe(&e)))
                    .collect::<std::result::Result<Vec<SqlValue>, String>>()
            })
            .collect()
    }

    fn execute(&mut self, statement: &SqlStatement) -> std::result::Result<(), String> {
        self.client.execute(statement.sql.as_str(), &bind(&statement.params)).map(|_| ()).map_err(|e| describe(&e))
    }
}

/// The server's message when there is one (`postgres::Error`'s Display
/// says only "db error").
fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => match error.source() {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

fn valid_gid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 150
        && prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        // "p1" + xid 5 would read as "p" + xid 15.
        && !prefix.ends_with(|c: char| c.is_ascii_digit())
}

impl PostgresParticipant {
    /// Connects (`postgresql://user:password@host:port/db` or
    /// `host=… user=…`), checks that the server allows prepared
    /// transactions, and creates `ferry_2pc_applied` if missing.
    pub fn connect(url: &str) -> Result<PostgresParticipant> {
        let mut client = Client::connect(url, NoTls).map_err(pg_error)?;
        let setting: String =
            client.query_one("SHOW max_prepared_transactions", &[]).map_err(pg_error)?.try_get(0).map_err(pg_error)?;
        if setting.trim().parse::<i64>().map_or(true, |n| n <= 0) {
            return Err(ClientError::Config(format!(
                "PostgreSQL has max_prepared_transactions = {setting}, which disables PREPARE TRANSACTION; \
                 PostgresParticipant needs it above 0: set max_prepared_transactions (e.g. to max_connections) \
                 in postgresql.conf and restart the server"
            )));
        }
        client
            .batch_execute(&format!(
                "BEGIN;
                 SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY});
                 CREATE TABLE IF NOT EXISTS ferry_2pc_applied (
                     gid_prefix TEXT NOT NULL,
                     xid BIGINT NOT NULL,
                     PRIMARY KEY (gid_prefix, xid)
                 );
                 COMMIT;"
            ))
            .map_err(pg_error)?;
        Ok(PostgresParticipant { client, url: url.to_string(), gid_prefix: DEFAULT_GID_PREFIX.to_string() })
    }

    /// Sets the prefix of this participant's global transaction ids
    /// (`<prefix><xid>`): one per coordinator sharing the PostgreSQL
    /// cluster. Letters, digits and `-_.:`, not ending in a digit.
    pub fn with_gid_prefix(mut self, prefix: &str) -> Result<PostgresParticipant> {
        if !valid_gid_prefix(prefix) {
            return Err(ClientError::Config(format!(
                "gid prefix {prefix:?}: use 1 to 150 letters, digits and -_.: not ending in a digit"
            )));
        }
        self.gid_prefix = prefix.to_string();
        Ok(self)
    }

    pub fn gid_prefix(&self) -> &str {
        &self.gid_prefix
    }

    /// The global transaction id of `xid`.
    pub fn gid(&self, xid: u64) -> String {
        format!("{}{xid}", self.gid_prefix)
    }

    /// The connection, for the application's schema and reads (outside a
    /// batch). Reconnects first if the connection was lost.
    pub fn client(&mut self) -> Result<&mut Client> {
        if self.client.is_closed() {
            tracing::info!("PostgreSQL connection lost; reconnecting");
            self.client = Client::connect(&self.url, NoTls).map_err(pg_error)?;
        }
        Ok(&mut self.client)
    }

    fn is_applied(&mut self, xid: u64) -> Result<bool> {
        let prefix = self.gid_prefix.clone();
        let row = self
            .client()?
            .query_opt("SELECT 1 FROM ferry_2pc_applied WHERE gid_prefix = $1 AND xid = $2", &[&prefix, &(xid as i64)])
            .map_err(pg_error)?;
        Ok(row.is_some())
    }
}

impl Participant for PostgresParticipant {
    type Batch<'a> = PostgresBatch<'a>;

    fn begin(&mut self) -> Result<PostgresBatch<'_>> {
        self.client()?;
        self.client.batch_execute("BEGIN").map_err(pg_error)?;
        Ok(PostgresBatch { client: &mut self.client, gid_prefix: &self.gid_prefix, open: true })
    }

    fn prepare(mut batch: PostgresBatch<'_>, xid: u64, _statements: &[SqlStatement]) -> Result<()> {
        // The statements already ran in the batch's transaction.
        let gid = format!("{}{xid}", batch.gid_prefix);
        batch
            .client
            .execute("INSERT INTO ferry_2pc_applied (gid_prefix, xid) VALUES ($1, $2)", &[&batch.gid_prefix, &(xid as i64)])
            .map_err(pg_error)?;
        // gid is validated ASCII without quotes: prefix and digits.
        batch.client.batch_execute(&format!("PREPARE TRANSACTION '{gid}'")).map_err(pg_error)?;
        batch.open = false;
        // PREPARE TRANSACTION in a failed transaction rolls it back and
        // still succeeds: check that it really is prepared.
        let found = batch
            .client
            .query_opt("SELECT 1 FROM pg_prepared_xacts WHERE gid = $1 AND database = current_database()", &[&gid])
            .map_err(pg_error)?;
        if found.is_none() {
            return Err(ClientError::Handler(format!("PREPARE TRANSACTION '{gid}' did not prepare (the transaction had failed)")));
        }
        Ok(())
    }

    fn commit(&mut self, xid: u64) -> Result<bool> {
        let gid = self.gid(xid);
        match self.client()?.batch_execute(&format!("COMMIT PREPARED '{gid}'")) {
            Ok(()) => Ok(true),
            Err(error) if error.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                if self.is_applied(xid)? {
                    Ok(false)
                } else {
                    Err(ClientError::Heuristic {
                        xid,
                        reason: format!(
                            "decided commit, but PostgreSQL holds neither prepared transaction {gid} nor its ferry_2pc_applied row"
                        ),
                    })
                }
            }
            Err(error) => Err(pg_error(error)),
        }
    }

    fn abort(&mut self, xid: u64) -> Result<()> {
        let gid = self.gid(xid);
        match self.client()?.batch_execute(&format!("ROLLBACK PREPARED '{gid}'")) {
            Ok(()) => Ok(()),
            Err(error) if error.code() == Some(&SqlState::UNDEFINED_OBJECT) => Ok(()),
            Err(error) => Err(pg_error(error)),
        }
    }

    fn prepared(&mut self) -> Result<Vec<u64>> {
        let prefix = self.gid_prefix.clone();
        let rows = self
            .client()?
            .query(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND left(gid, length($1)) = $1",
                &[&prefix],
            )
            .map_err(pg_error)?;
        let mut xids: Vec<u64> = rows
            .iter()
            .filter_map(|row| {
                let gid: String = row.get(0);
                let suffix = &gid[prefix.len()..];
                (!suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())).then(|| suffix.parse().ok()).flatten()
            })
            .collect();
        xids.sort_unstable();
        Ok(xids)
    }

    fn forget_applied_below(&mut self, xid: u64) -> Result<()> {
        let prefix = self.gid_prefix.clone();
        self.client()?
            .execute("DELETE FROM ferry_2pc_applied WHERE gid_prefix = $1 AND xid < $2", &[&prefix, &(xid as i64)])
            .map_err(pg_error)?;
        Ok(())
    }
}

fn is_text(ty: &Type) -> bool {
    [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME, Type::UNKNOWN].contains(ty)
}

/// Parameters: an integer binds to any integer, floating-point, numeric,
/// boolean or text parameter; a real to floating-point or text; text to
/// text, json and jsonb. For other types, cast in SQL (`$1::text::date`).
impl ToSql for SqlValue {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        match self {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Integer(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::OID => u32::try_from(*v)?.to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::NUMERIC => {
                    numeric_from_i64(*v, out);
                    Ok(IsNull::No)
                }
                _ if is_text(ty) => v.to_string().as_str().to_sql(&Type::TEXT, out),
                _ => Err(format!("an integer cannot bind to a {ty} parameter; cast it in SQL").into()),
            },
            SqlValue::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ if is_text(ty) => v.to_string().as_str().to_sql(&Type::TEXT, out),
                _ => Err(format!("a real cannot bind to a {ty} parameter; cast it in SQL (e.g. $1::float8)").into()),
            },
            SqlValue::Text(v) => match *ty {
                Type::JSON => {
                    out.extend_from_slice(v.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(v.as_bytes());
                    Ok(IsNull::No)
                }
                _ if is_text(ty) => v.as_str().to_sql(&Type::TEXT, out),
                _ => Err(format!("text cannot bind to a {ty} parameter; cast it in SQL (e.g. $1::text::{ty})").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in to_sql, with a message naming the type.
        true
    }

    postgres::types::to_sql_checked!();
}

/// PostgreSQL's binary numeric: digit count, weight, sign, display scale,
/// then base-10000 digits, most significant first.
fn numeric_from_i64(value: i64, out: &mut BytesMut) {
    let mut magnitude = value.unsigned_abs();
    let mut digits = Vec::new();
    while magnitude > 0 {
        digits.push((magnitude % 10_000) as i16);
        magnitude /= 10_000;
    }
    digits.reverse();
    let weight = digits.len().saturating_sub(1) as i16;
    let sign: u16 = if value < 0 { 0x4000 } else { 0 };
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    for digit in digits {
        out.extend_from_slice(&digit.to_be_bytes());
    }
}

/// A numeric as an integer when it has no fractional part and fits, else as a real.
fn numeric_to_value(raw: &[u8]) -> std::result::Result<SqlValue, BoxError> {
    let word = |i: usize| -> std::result::Result<u16, BoxError> {
        raw.get(i * 2..i * 2 + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "short numeric".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i32;
    let sign = word(2)?;
    match sign {
        0xC000 => return Ok(SqlValue::Real(f64::NAN)),
        0xD000 => return Ok(SqlValue::Real(f64::INFINITY)),
        0xF000 => return Ok(SqlValue::Real(f64::NEG_INFINITY)),
        _ => {}
    }
    let mut integer: Option<i128> = Some(0);
    let mut real = 0f64;
    let mut fractional = false;
    for i in 0..ndigits {
        let digit = word(4 + i)? as i128;
        let power = weight - i as i32;
        real += digit as f64 * 10_000f64.powi(power);
        if power >= 0 {
            integer = integer.and_then(|n| n.checked_add(digit.checked_mul(10_000i128.checked_pow(power as u32)?)?));
        } else if digit != 0 {
            fractional = true;
        }
    }
    let negative = sign == 0x4000;
    if !fractional {
        if let Some(n) = integer.and_then(|n| i64::try_from(if negative { -n } else { n }).ok()) {
            return Ok(SqlValue::Integer(n));
        }
    }
    Ok(SqlValue::Real(if negative { -real } else { real }))
}

/// A column read into a [`SqlValue`].
struct PgValue(SqlValue);

impl<'a> FromSql<'a> for PgValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<PgValue, BoxError> {
        Ok(PgValue(match *ty {
            Type::BOOL => SqlValue::Integer(bool::from_sql(ty, raw)? as i64),
            Type::INT2 => SqlValue::Integer(i16::from_sql(ty, raw)? as i64),
            Type::INT4 => SqlValue::Integer(i32::from_sql(ty, raw)? as i64),
            Type::INT8 => SqlValue::Integer(i64::from_sql(ty, raw)?),
            Type::OID => SqlValue::Integer(u32::from_sql(ty, raw)? as i64),
            Type::FLOAT4 => SqlValue::Real(f32::from_sql(ty, raw)? as f64),
            Type::FLOAT8 => SqlValue::Real(f64::from_sql(ty, raw)?),
            Type::NUMERIC => numeric_to_value(raw)?,
            Type::JSON => SqlValue::Text(String::from_utf8_lossy(raw).into_owned()),
            Type::JSONB => SqlValue::Text(String::from_utf8_lossy(raw.get(1..).unwrap_or_default()).into_owned()),
            _ if is_text(ty) => SqlValue::Text(String::from_sql(&Type::TEXT, raw)?),
            _ => return Err(format!("a {ty} column cannot be read as a SqlValue; cast it in SQL (e.g. ::text)").into()),
        }))
    }

    fn from_sql_null(_: &Type) -> std::result::Result<PgValue, BoxError> {
        Ok(PgValue(SqlValue::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(v: i64) -> SqlValue {
        let mut out = BytesMut::new();
        numeric_from_i64(v, &mut out);
        numeric_to_value(&out).unwrap()
    }

    #[test]
    fn numerics_round_trip() {
        for v in [0, 1, -1, 9_999, 10_000, 123_456_789, -987_654_321_012, i64::MAX, i64::MIN] {
            assert_eq!(numeric(v), SqlValue::Integer(v), "{v}");
        }
        // 12.5: digits [12, 5000], weight 0, dscale 1.
        let raw = [0u8, 2, 0, 0, 0, 0, 0, 1, 0, 12, 0x13, 0x88];
        assert_eq!(numeric_to_value(&raw).unwrap(), SqlValue::Real(12.5));
        // -0.0003: digits [3], weight -1.
        let raw = [0u8, 1, 0xFF, 0xFF, 0x40, 0, 0, 4, 0, 3];
        assert_eq!(numeric_to_value(&raw).unwrap(), SqlValue::Real(-0.0003));
    }

    #[test]
    fn gid_prefixes() {
        assert!(valid_gid_prefix("ferry-"));
        assert!(valid_gid_prefix("bank-transfer-1."));
        assert!(!valid_gid_prefix(""));
        assert!(!valid_gid_prefix("p1"));
        assert!(!valid_gid_prefix("it's"));
    }
}
