import java.time.Instant;
import java.time.format.DateTimeFormatter;
import java.time.temporal.ChronoUnit;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The benchmarks' load generator: publishes valid sales events (CONTRACT §1) at a fixed rate.
 *
 * Why Java: kafka-python spends a whole core at ~30-40k messages/s, and on a 2-core machine
 * that core is taken from the Spark job being measured. The official Java client does the same
 * work for a fraction of the CPU. It runs with the broker's own kafka-clients jar, as a single
 * source file (java Foo.java), so nothing is compiled ahead.
 *
 * Every event is unique (event_id = prefix-counter), key = event_id, acks=all, and its
 * event_time is the moment it is handed to the producer, so "now minus event_time" at the
 * moment the event is visible in a view is its publish-to-view latency.
 *
 * Usage: java -cp 'libs/*' BenchProducer.java BOOTSTRAP TOPIC EVENTS RATE PREFIX
 *   RATE 0 = as fast as the broker takes them. Prints one summary line on stdout.
 */
public class BenchProducer {
    private static final String[] CATEGORIES = {"electronics", "clothing", "home", "garden", "sports", "books", "toys", "beauty"};
    private static final String[] REGIONS = {"north", "south", "east", "west", "central"};
    private static final String[] CHANNELS = {"web", "mobile", "store", "partner"};
    private static final DateTimeFormatter ISO = DateTimeFormatter.ISO_INSTANT;

    private static long mix(long x) {
        x ^= x >>> 33;
        x *= 0xff51afd7ed558ccdL;
        x ^= x >>> 33;
        x *= 0xc4ceb9fe1a85ec53L;
        x ^= x >>> 33;
        return x & Long.MAX_VALUE;
    }

    static String event(String prefix, long i, Instant now) {
        long h = mix(i * 31 + prefix.hashCode());
        long cents = 1 + h % 499_999;
        return "{\"event_id\":\"" + prefix + "-" + i + "\",\"order_id\":\"o-" + prefix + "-" + (i / 3)
            + "\",\"product_id\":\"p-" + (h % 5000) + "\",\"customer_id\":\"c-" + (h / 7 % 100_000)
            + "\",\"category\":\"" + CATEGORIES[(int) (h / 11 % CATEGORIES.length)]
            + "\",\"region\":\"" + REGIONS[(int) (h / 13 % REGIONS.length)]
            + "\",\"channel\":\"" + CHANNELS[(int) (h / 17 % CHANNELS.length)]
            + "\",\"quantity\":" + (1 + h / 19 % 5) + ",\"amount\":" + (cents / 100) + "." + String.format("%02d", cents % 100)
            + ",\"event_time\":\"" + ISO.format(now.truncatedTo(ChronoUnit.MILLIS)) + "\"}";
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 5) {
            System.err.println("usage: BenchProducer BOOTSTRAP TOPIC EVENTS RATE PREFIX");
            System.exit(2);
        }
        String bootstrap = args[0], topic = args[1], prefix = args[4];
        long events = Long.parseLong(args[2]);
        double rate = Double.parseDouble(args[3]);

        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        props.put(ProducerConfig.BATCH_SIZE_CONFIG, String.valueOf(256 * 1024));
        props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());

        AtomicLong failed = new AtomicLong();
        long started = System.nanoTime();
        long behindMax = 0;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
            for (long i = 0; i < events; i++) {
                if (rate > 0) {
                    long due = started + (long) (i * 1e9 / rate);
                    long wait = due - System.nanoTime();
                    if (wait > 1_000_000) {
                        Thread.sleep(wait / 1_000_000);
                    } else if (wait < 0) {
                        behindMax = Math.max(behindMax, -wait);
                    }
                }
                String id = prefix + "-" + i;
                byte[] value = event(prefix, i, Instant.now()).getBytes(java.nio.charset.StandardCharsets.UTF_8);
                producer.send(new ProducerRecord<>(topic, id.getBytes(java.nio.charset.StandardCharsets.UTF_8), value),
                    (metadata, error) -> { if (error != null) failed.incrementAndGet(); });
            }
            producer.flush();
        }
        double seconds = (System.nanoTime() - started) / 1e9;
        System.out.printf("{\"published\": %d, \"failed\": %d, \"seconds\": %.3f, \"rate\": %.1f, \"max_behind_ms\": %.1f}%n",
            events, failed.get(), seconds, events / seconds, behindMax / 1e6);
        System.exit(failed.get() == 0 ? 0 : 1);
    }
}
