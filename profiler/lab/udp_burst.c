/* Paced bursts of UDP datagrams, each burst one sendmmsg() call: packets leave back to back,
 * far faster than a CPU's backlog drains, so a small netdev_max_backlog overflows on every
 * burst while the average rate stays one CPU can keep up with -- the traffic a bigger backlog
 * fixes. Python's send() loop cannot make bursts this dense.
 *
 * usage: udp_burst IP PORT SIZE RATE BURST DURATION_S CPU
 * Prints one JSON line {"event": "summary", ...} at the end; stops on SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BURST 1024

static volatile sig_atomic_t stop;

static void on_signal(int signum) { (void)signum; stop = 1; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: %s IP PORT SIZE RATE BURST DURATION_S CPU\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[2]), size = atoi(argv[3]), burst = atoi(argv[5]), cpu = atoi(argv[7]);
    double rate = atof(argv[4]), duration = atof(argv[6]);
    if (port <= 0 || port > 65535 || size <= 0 || size > 1400 || burst <= 0 || burst > MAX_BURST ||
        rate <= 0 || duration <= 0 || duration > 630) {
        fprintf(stderr, "udp_burst: an argument is out of range\n");
        return 2;
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
        fprintf(stderr, "udp_burst: not an IPv4 address: %s\n", argv[1]);
        return 2;
    }
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof(set), &set);
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0) {
        perror("udp_burst: socket");
        return 1;
    }
    static char payload[1400];
    memset(payload, 'b', sizeof(payload));
    static struct iovec iov[MAX_BURST];
    static struct mmsghdr msgs[MAX_BURST];
    for (int i = 0; i < burst; i++) {
        iov[i].iov_base = payload;
        iov[i].iov_len = size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long sent = 0, errors = 0, bursts = 0;
    double start = now_s(), deadline = start + duration;
    while (!stop) {
        /* Each burst leaves at its time on a fixed schedule: no drift. */
        double due = start + bursts * burst / rate;
        if (due >= deadline)
            break;
        double wait = due - now_s();
        if (wait > 0) {
            struct timespec ts = {.tv_sec = (time_t)wait, .tv_nsec = (long)((wait - (time_t)wait) * 1e9)};
            nanosleep(&ts, NULL);
        }
        int done = sendmmsg(fd, msgs, burst, 0);
        if (done < 0)
            errors += burst;
        else
            sent += done, errors += burst - done;
        bursts++;
    }
    close(fd);
    printf("{\"event\": \"summary\", \"role\": \"udp-burst\", \"sent\": %lld, \"send_errors\": %lld, "
           "\"bursts\": %lld, \"elapsed_s\": %.3f}\n", sent, errors, bursts, now_s() - start);
    return 0;
}
