//! The CLI's Kafka request/response client: ferry-kafka's, connected with
//! the CLI's bootstrap server and timeout and its error explanations.

use ferry_kafka::client::KafkaClient;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};

use super::ConnectArgs;

pub struct WireClient {
    inner: KafkaClient,
}

impl WireClient {
    pub async fn connect(args: &ConnectArgs) -> anyhow::Result<WireClient> {
        let protocol = args.security.protocol()?;
        if protocol != ferry_kafka::listener::SecurityProtocol::Plaintext {
            anyhow::bail!(
                "this command speaks PLAINTEXT only, not {protocol}: run it against a PLAINTEXT listener (on loopback), or use Kafka's own tool over {protocol}"
            );
        }
        let inner = KafkaClient::connect(&args.bootstrap_server, args.timeout(), "ferry-cli").await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                args.explain("connection timed out")
            } else {
                args.explain(format!("BrokerTransportFailure: {e}"))
            }
        })?;
        Ok(WireClient { inner })
    }

    pub async fn call<Req: Encodable, Resp: Decodable>(&mut self, api: ApiKey, version: i16, request: &Req) -> anyhow::Result<Resp> {
        self.inner.call(api, version, request).await
    }
}
