//! A minimal Kafka request/response client over one TCP connection, for
//! the admin APIs librdkafka does not expose (transactions, producers).

use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ConnectArgs;

/// Largest answer accepted.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

pub struct WireClient {
    stream: TcpStream,
    next_correlation_id: i32,
    timeout: Duration,
}

impl WireClient {
    pub async fn connect(args: &ConnectArgs) -> anyhow::Result<WireClient> {
        let stream = tokio::time::timeout(args.timeout(), TcpStream::connect(&args.bootstrap_server))
            .await
            .map_err(|_| args.explain("connection timed out"))?
            .map_err(|e| args.explain(format!("BrokerTransportFailure: {e}")))?;
        Ok(WireClient { stream, next_correlation_id: 1, timeout: args.timeout() })
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
            .with_client_id(Some(StrBytes::from_static_str("ferry-cli")));
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
