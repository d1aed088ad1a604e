//! TransactionalProcessor against the real broker: outputs exactly once,
//! and a second instance with the same transactional.id fences the first.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_client::{BatchOutcome, ClientError, Output, Preset, ProcessorConfig, Semantics, TransactionalProcessor};
use ferry_tests::Ferry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::Message;

fn processor(bootstrap: &str, transactional_id: &str) -> TransactionalProcessor {
    let preset = Preset::new(Semantics::ExactlyOnce, bootstrap).transactional_id(transactional_id);
    let mut config = ProcessorConfig::new(preset, "upper", &["words"]);
    config.commit_interval = Duration::from_millis(50);
    TransactionalProcessor::new(config).expect("processor")
}

fn upper(message: &rdkafka::message::BorrowedMessage<'_>) -> Result<Vec<Output>, String> {
    let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).to_uppercase();
    Ok(vec![Output::new("upper-words", None, value.as_bytes())])
}

/// Runs batches until `inputs` inputs committed or `deadline` passes.
fn process(processor: &mut TransactionalProcessor, inputs: usize, deadline: Duration) -> usize {
    let started = Instant::now();
    let mut committed = 0;
    while committed < inputs && started.elapsed() < deadline {
        if let BatchOutcome::Committed { inputs, .. } = processor.process_batch(upper).expect("batch") {
            committed += inputs;
        }
    }
    committed
}

fn produce(bootstrap: &str, words: std::ops::Range<u32>) {
    let producer: ThreadedProducer<_> =
        Preset::new(Semantics::AtLeastOnce, bootstrap).producer_config().create().expect("producer");
    for i in words {
        let word = format!("word-{i}");
        producer.send(BaseRecord::<(), _>::to("words").payload(&word)).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn read_committed(bootstrap: &str) -> BTreeMap<String, usize> {
    let consumer: BaseConsumer =
        Preset::new(Semantics::ExactlyOnce, bootstrap).consumer_config("audit").create().expect("consumer");
    consumer.subscribe(&["upper-words"]).unwrap();
    let mut seen = BTreeMap::new();
    let mut last = Instant::now();
    let started = Instant::now();
    while (seen.is_empty() && started.elapsed() < Duration::from_secs(30)) || last.elapsed() < Duration::from_secs(2) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            *seen.entry(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned()).or_insert(0) += 1;
            last = Instant::now();
        }
    }
    seen
}

#[test]
fn a_new_instance_fences_the_old_and_outputs_stay_exactly_once() {
    let ferry = Ferry::start_with(&["--group-initial-rebalance-delay-ms", "0"], &[]);
    let bootstrap = ferry.bootstrap();
    produce(&bootstrap, 0..100);

    let mut old = processor(&bootstrap, "upper-1");
    assert_eq!(process(&mut old, 100, Duration::from_secs(30)), 100);

    // The new instance registers the same transactional.id: the old one is a zombie now.
    let mut new = processor(&bootstrap, "upper-1");
    produce(&bootstrap, 100..110);
    let started = Instant::now();
    let fenced = loop {
        match old.process_batch(upper) {
            Err(ClientError::Fenced(id)) => break id,
            Ok(BatchOutcome::Committed { inputs, .. }) => panic!("a fenced instance committed {inputs} inputs"),
            Ok(_) if started.elapsed() < Duration::from_secs(20) => continue,
            other => panic!("expected the old instance to be fenced, got {other:?}"),
        }
    };
    assert_eq!(fenced, "upper-1");
    drop(old);

    assert_eq!(process(&mut new, 10, Duration::from_secs(60)), 10);
    let outputs = read_committed(&bootstrap);
    assert_eq!(outputs.len(), 110, "every input transformed");
    assert!(outputs.values().all(|&n| n == 1), "no output twice: {:?}", outputs.iter().filter(|(_, &n)| n != 1).collect::<Vec<_>>());
}
