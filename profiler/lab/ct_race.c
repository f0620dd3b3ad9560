/*
 * ct_race: make two CPUs present the same new connection to conntrack at the same instant.
 *
 * netprof lab helper, compiled at scenario setup into the cache directory; it runs inside a
 * lab pod only and sends only to the address it is given (a lab pod's).
 *
 * Conntrack creates an *unconfirmed* entry when a packet of a new flow passes the first
 * hook and inserts ("confirms") it into the hash table when the packet leaves the last one.
 * When two CPUs carry packets of the same tuple between those two points, the second
 * confirm finds the first's entry: a clash. UDP (and other protocols with allow_clash)
 * resolve it (clash_resolve); for TCP the loser is dropped (insert_failed + drop, skb drop
 * reason NETFILTER_DROP), and the sender sees EPERM.
 *
 *   ct_race tcp-syn SRC_IP DST_IP DST_PORT ROUNDS CPU_A CPU_B
 *       two raw sockets, one thread per CPU; each round both threads send the same TCP SYN
 *       (new source port every round), released together by a spin barrier.
 *   ct_race udp DST_IP DST_PORT ROUNDS CPU_A CPU_B
 *       a resolver's lookup: each round one new UDP socket (source port 1024 + round) shared
 *       by the two threads, each sending one datagram on it (the A and the AAAA query),
 *       released together.
 *
 * Prints one JSON line: {"event": "summary", "mode": ..., "rounds": N, "sent": N,
 * "eperm": N, "rounds_with_eperm": N, "other_errors": N, "elapsed_s": S}.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROUNDS 60000          /* source ports 1024 + round never repeat within a run */
#define FIRST_SOURCE_PORT 1024
#define SPINS_BEFORE_YIELD 100000 /* a descheduled partner must not cost a whole timeslice */

enum mode { MODE_TCP_SYN, MODE_UDP };

struct config {
	enum mode mode;
	struct in_addr src, dst;
	uint16_t dst_port;
	int rounds;
	int cpus[2];
};

struct worker {
	const struct config *config;
	int index;
	int fd;
	int failed_setup;
	unsigned char *eperm_in_round; /* per round: did this thread's send fail with EPERM */
	long sent, eperm, other_errors;
};

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() do { } while (0)
#endif

static atomic_uint barrier_arrived;
static atomic_uint barrier_generation;

static void barrier_wait(void)
{
	unsigned generation = atomic_load(&barrier_generation);
	if (atomic_fetch_add(&barrier_arrived, 1) == 1) {
		atomic_store(&barrier_arrived, 0);
		atomic_fetch_add(&barrier_generation, 1);
		return;
	}
	for (long spins = 0; atomic_load(&barrier_generation) == generation; spins++) {
		if (spins % SPINS_BEFORE_YIELD == SPINS_BEFORE_YIELD - 1)
			sched_yield();
		else
			cpu_relax();
	}
}

static uint16_t checksum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static uint32_t checksum_add(uint32_t sum, const void *data, size_t len)
{
	const uint8_t *bytes = data;
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(bytes[i] << 8 | bytes[i + 1]);
	if (len & 1)
		sum += (uint32_t)(bytes[len - 1] << 8);
	return sum;
}

/* IPv4 header + TCP SYN, no options; the kernel fills the IP checksum (IP_HDRINCL). */
static size_t build_syn(uint8_t *packet, const struct config *config, uint16_t source_port)
{
	uint8_t *ip = packet, *tcp = packet + 20;
	memset(packet, 0, 40);
	ip[0] = 0x45;
	ip[2] = 0;
	ip[3] = 40;
	ip[4] = (uint8_t)(source_port >> 8); /* identical id in both copies */
	ip[5] = (uint8_t)source_port;
	ip[8] = 64;
	ip[9] = IPPROTO_TCP;
	memcpy(ip + 12, &config->src, 4);
	memcpy(ip + 16, &config->dst, 4);

	tcp[0] = (uint8_t)(source_port >> 8);
	tcp[1] = (uint8_t)source_port;
	tcp[2] = (uint8_t)(config->dst_port >> 8);
	tcp[3] = (uint8_t)config->dst_port;
	uint32_t seq = 0x6e657470u ^ source_port;
	tcp[4] = seq >> 24; tcp[5] = seq >> 16; tcp[6] = seq >> 8; tcp[7] = seq;
	tcp[12] = 5 << 4;  /* data offset: 5 words */
	tcp[13] = 0x02;    /* SYN */
	tcp[14] = 0xfa; tcp[15] = 0xf0;

	uint8_t pseudo[12];
	memcpy(pseudo, &config->src, 4);
	memcpy(pseudo + 4, &config->dst, 4);
	pseudo[8] = 0;
	pseudo[9] = IPPROTO_TCP;
	pseudo[10] = 0;
	pseudo[11] = 20;
	uint16_t sum = checksum_fold(checksum_add(checksum_add(0, pseudo, 12), tcp, 20));
	tcp[16] = sum >> 8;
	tcp[17] = sum & 0xff;
	return 40;
}

static int pin_to_cpu(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static atomic_int shared_udp_fd = -1;

/* A resolver opens one socket per lookup and sends A and AAAA on it at once: thread 0 opens
 * a socket bound to this round's port, both threads send on it, thread 0 closes it. */
static int open_round_socket(uint16_t source_port)
{
	struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(source_port)};
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&local, sizeof(local)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void *run_worker(void *arg)
{
	struct worker *worker = arg;
	const struct config *config = worker->config;
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr = config->dst,
				 .sin_port = htons(config->dst_port)};
	uint8_t packet[64];
	char query[32];

	if (pin_to_cpu(config->cpus[worker->index]) != 0)
		worker->failed_setup = 1;
	/* Every thread takes part in every barrier even after a failed setup, so the other
	 * thread is never left spinning. */
	for (int round = 0; round < config->rounds; round++) {
		uint16_t source_port = (uint16_t)(FIRST_SOURCE_PORT + round);
		const void *payload;
		size_t len;
		int fd = worker->fd;
		if (config->mode == MODE_TCP_SYN) {
			len = build_syn(packet, config, source_port);
			payload = packet;
		} else {
			len = (size_t)snprintf(query, sizeof(query), "query %d thread %d", round, worker->index);
			payload = query;
			if (worker->index == 0)
				atomic_store(&shared_udp_fd, open_round_socket(source_port));
		}
		barrier_wait();
		if (config->mode == MODE_UDP)
			fd = atomic_load(&shared_udp_fd);
		if (!worker->failed_setup && fd >= 0) {
			if (sendto(fd, payload, len, 0, (struct sockaddr *)&to, sizeof(to)) >= 0) {
				worker->sent++;
			} else if (errno == EPERM) {
				worker->eperm++;
				worker->eperm_in_round[round] = 1;
			} else {
				worker->other_errors++;
			}
		} else if (fd < 0) {
			worker->other_errors++;
		}
		if (config->mode == MODE_UDP) {
			barrier_wait(); /* both sent: the socket may go */
			if (worker->index == 0 && fd >= 0)
				close(fd);
		}
	}
	return NULL;
}

static int parse_int(const char *text, int low, int high, const char *what)
{
	char *end;
	long value = strtol(text, &end, 10);
	if (*text == '\0' || *end != '\0' || value < low || value > high) {
		fprintf(stderr, "ct_race: bad %s %s (want %d..%d)\n", what, text, low, high);
		exit(2);
	}
	return (int)value;
}

static void parse_address(const char *text, struct in_addr *out, const char *what)
{
	if (inet_pton(AF_INET, text, out) != 1) {
		fprintf(stderr, "ct_race: bad %s address %s\n", what, text);
		exit(2);
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: ct_race tcp-syn SRC_IP DST_IP DST_PORT ROUNDS CPU_A CPU_B\n"
			"       ct_race udp DST_IP DST_PORT ROUNDS CPU_A CPU_B\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct config config = {0};
	int arg = 2;

	if (argc < 2)
		usage();
	if (strcmp(argv[1], "tcp-syn") == 0 && argc == 8) {
		config.mode = MODE_TCP_SYN;
		parse_address(argv[arg++], &config.src, "source");
	} else if (strcmp(argv[1], "udp") == 0 && argc == 7) {
		config.mode = MODE_UDP;
	} else {
		usage();
	}
	parse_address(argv[arg++], &config.dst, "destination");
	config.dst_port = (uint16_t)parse_int(argv[arg++], 1, 65535, "port");
	config.rounds = parse_int(argv[arg++], 1, MAX_ROUNDS, "rounds");
	long cpu_count = sysconf(_SC_NPROCESSORS_ONLN);
	config.cpus[0] = parse_int(argv[arg++], 0, (int)cpu_count - 1, "cpu");
	config.cpus[1] = parse_int(argv[arg++], 0, (int)cpu_count - 1, "cpu");
	if (config.cpus[0] == config.cpus[1]) {
		fprintf(stderr, "ct_race: the two threads need two different CPUs\n");
		return 2;
	}

	struct worker workers[2] = {0};
	for (int i = 0; i < 2; i++) {
		workers[i].config = &config;
		workers[i].index = i;
		workers[i].eperm_in_round = calloc((size_t)config.rounds, 1);
		if (!workers[i].eperm_in_round) {
			perror("ct_race: calloc");
			return 1;
		}
		workers[i].fd = -1;
		if (config.mode == MODE_UDP)
			continue;
		/* IPPROTO_RAW implies IP_HDRINCL: the SYN goes out exactly as built. Needs CAP_NET_RAW. */
		workers[i].fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
		if (workers[i].fd < 0) {
			perror("ct_race: raw socket (needs CAP_NET_RAW)");
			return 1;
		}
	}

	struct timespec start, end;
	clock_gettime(CLOCK_MONOTONIC, &start);
	pthread_t threads[2];
	for (int i = 0; i < 2; i++) {
		if (pthread_create(&threads[i], NULL, run_worker, &workers[i]) != 0) {
			fprintf(stderr, "ct_race: pthread_create failed\n");
			return 1;
		}
	}
	for (int i = 0; i < 2; i++)
		pthread_join(threads[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &end);

	if (workers[0].failed_setup || workers[1].failed_setup) {
		fprintf(stderr, "ct_race: could not pin threads to CPUs %d and %d\n", config.cpus[0], config.cpus[1]);
		return 3;
	}
	long rounds_with_eperm = 0;
	for (int round = 0; round < config.rounds; round++)
		rounds_with_eperm += workers[0].eperm_in_round[round] | workers[1].eperm_in_round[round];
	double elapsed_s = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
	printf("{\"event\": \"summary\", \"role\": \"ct-race\", \"mode\": \"%s\", \"rounds\": %d, "
	       "\"sent\": %ld, \"eperm\": %ld, \"rounds_with_eperm\": %ld, \"other_errors\": %ld, "
	       "\"elapsed_s\": %.3f}\n",
	       config.mode == MODE_TCP_SYN ? "tcp-syn" : "udp", config.rounds,
	       workers[0].sent + workers[1].sent, workers[0].eperm + workers[1].eperm,
	       rounds_with_eperm, workers[0].other_errors + workers[1].other_errors, elapsed_s);
	return 0;
}
