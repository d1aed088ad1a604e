# Sourced by run.sh and cluster.sh: installs what the side-by-side
# benchmarks need. Expects PEERS (bench/.peers) and a `say` function.

# apt_install PKG...: installs the Debian packages given that are missing.
apt_install() {
  local need=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  if ((${#need[@]})); then
    say "apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

# fetch_kafka: Apache Kafka 4.4.0 (broker, storage tool, perf tools) from
# Maven Central into $PEERS/kafka/libs, unless already there.
fetch_kafka() {
  if [ ! -f "$PEERS/kafka/libs/kafka_2.13-4.4.0.jar" ] || [ ! -f "$PEERS/kafka/libs/kafka-tools-4.4.0.jar" ]; then
    say "fetching Kafka 4.4.0 jars"
    mvn -q -B -f bench/peers/kafka/pom.xml dependency:copy-dependencies \
      -DoutputDirectory="$PEERS/kafka/libs" -DincludeScope=runtime
  fi
}
