package dev.ferry.compat;

import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialsDescription;
import org.apache.kafka.common.errors.SaslAuthenticationException;

/**
 * Ferry compatibility check: the Java client's SASL/SCRAM-SHA-512 over SASL_SSL against a user
 * that kafka-configs.sh (ConfigCommand) created online.
 *
 * <ol>
 *   <li>A wrong password is refused with SaslAuthenticationException.
 *   <li>The right one logs in, and DescribeUserScramCredentials lists the user's SCRAM-SHA-512
 *       credential.
 * </ol>
 *
 * <p>Env: FERRY_SASL_BOOTSTRAP (the SASL_SSL listener), FERRY_SASL_USER, FERRY_SASL_PASSWORD,
 * FERRY_SASL_CA (PEM CA file).
 */
public final class KafkaSaslCompat {
    private static final CompatOutput OUT = new CompatOutput("java-sasl");

    private KafkaSaslCompat() {}

    static Properties props(String user, String password) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, System.getenv("FERRY_SASL_BOOTSTRAP"));
        p.put("security.protocol", "SASL_SSL");
        p.put("sasl.mechanism", "SCRAM-SHA-512");
        p.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required username=\""
                + user + "\" password=\"" + password + "\";");
        p.put("ssl.truststore.type", "PEM");
        p.put("ssl.truststore.location", System.getenv("FERRY_SASL_CA"));
        return p;
    }

    public static void main(String[] args) throws Exception {
        String user = System.getenv("FERRY_SASL_USER");
        String password = System.getenv("FERRY_SASL_PASSWORD");
        try (Admin admin = Admin.create(props(user, password + "-wrong"))) {
            admin.describeCluster().clusterId().get(20, TimeUnit.SECONDS);
            OUT.fail("a wrong password was accepted");
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof SaslAuthenticationException)) {
                OUT.fail("a wrong password failed with " + e.getCause() + ", not SaslAuthenticationException");
            }
            OUT.log("wrong password refused: " + e.getCause().getMessage());
        }
        try (Admin admin = Admin.create(props(user, password))) {
            String cluster = admin.describeCluster().clusterId().get(20, TimeUnit.SECONDS);
            UserScramCredentialsDescription d =
                    admin.describeUserScramCredentials(List.of(user)).description(user).get(20, TimeUnit.SECONDS);
            boolean sha512 = d.credentialInfos().stream().anyMatch(c -> c.mechanism() == ScramMechanism.SCRAM_SHA_512);
            if (!sha512) {
                OUT.fail("no SCRAM-SHA-512 credential described for " + user + ": " + d);
            }
            OUT.log("logged in as " + user + " to cluster " + cluster + "; " + d);
        }
        OUT.log("OK");
        System.exit(0);
    }
}
