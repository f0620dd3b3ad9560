/* Fires the syscalls:sys_enter_getppid tracepoint as fast as one thread can: N getppid()
 * calls, then prints the nanoseconds per call. bench/micro.py compiles it at run time
 * (no binary is committed) and runs it with and without a program on that tracepoint. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long calls = argc > 1 ? atol(argv[1]) : 1000000;
    struct timespec start, end;

    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < calls; i++)
        syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
    printf("%.2f\n", ns / calls);
    return 0;
}
