//! A minimal Kafka request/response client over one TCP connection: what a
//! broker uses to forward a request to another broker (DescribeQuorum to
//! the metadata leader, ElectLeaders to a partition's leader), and what the
//! CLI uses for the admin APIs librdkafka does not expose.

use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer accepted.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Marks a request one broker forwarded to another, so it is never forwarded again.
pub const FORWARD_CLIENT_ID: &str = "ferry-forward";

/// Forwards `request` to the broker at `addr` over a connection of its own;
/// `timeout` bounds the connect and the answer each.
pub async fn forward<Req: Encodable, Resp: Decodable>(addr: &str, api: ApiKey, version: i16, request: &Req, timeout: Duration) -> anyhow::Result<Resp> {
    let mut client = KafkaClient::connect(addr, timeout, FORWARD_CLIENT_ID).await?;
    client.call(api, version, request).await
}

pub struct KafkaClient {
    stream: TcpStream,
    next_correlation_id: i32,
    timeout: Duration,
    client_id: &'static str,
}

impl KafkaClient {
    pub async fn connect(addr: &str, timeout: Duration, client_id: &'static str) -> std::io::Result<KafkaClient> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out"))??;
        Ok(KafkaClient { stream, next_correlation_id: 1, timeout, client_id })
    }

    pub async fn call<Req: Encodable, Resp: Decodable>(&mut self, api: ApiKey, version: i16, request: &Req) -> anyhow::Result<Resp> {
        let cid = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 0]);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(cid)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        header.encode(&mut buf, api.request_header_version(version))?;
        request.encode(&mut buf, version)?;
        let len = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        let exchange = async {
            self.stream.write_all(&buf).await?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = i32::from_be_bytes(len);
            if len < 4 || len as usize > MAX_RESPONSE_BYTES {
                bail!("broker sent a response of {len} bytes");
            }
            let mut body = vec![0u8; len as usize];
            self.stream.read_exact(&mut body).await?;
            Ok(body)
        };
        let body = tokio::time::timeout(self.timeout, exchange).await.context("the broker did not answer in time")??;
        let mut body = Bytes::from(body);
        let header_version = api.response_header_version(version);
        let got = kafka_protocol::messages::ResponseHeader::decode(&mut body, header_version)?;
        if got.correlation_id != cid {
            bail!("answer to request {} arrived for request {cid}", got.correlation_id);
        }
        Resp::decode(&mut body, version).with_context(|| format!("cannot decode the {api:?} answer"))
    }
}
