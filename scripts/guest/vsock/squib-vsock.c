/*
 * squib-vsock: a tiny AF_VSOCK echo server and pattern sender for squib's guest tests
 * (busybox has no vsock tool). Built statically by scripts/guest/rootfs.sh as /bin/squib-vsock.
 *
 *   squib-vsock echo PORT
 *       Listen on VMADDR_CID_ANY:PORT, print `SQUIB vsock echo listening port=PORT`, and for
 *       every connection fork a child that echoes all bytes back until EOF, then closes.
 *       Runs forever.
 *   squib-vsock send CID PORT BYTES
 *       Connect to CID:PORT, send BYTES bytes of the pattern below while reading the echo
 *       back (poll(), so flow control never deadlocks), shutdown(SHUT_WR) after the last
 *       byte, read until EOF and compare everything received with the pattern. Prints one
 *       line and exits 0 only on a full match:
 *           SQUIB vsock send port=PORT sent=N received=M match=<1|0>
 *           SQUIB vsock send port=PORT error=<errno name, e.g. ECONNRESET>
 *       A connection to a host port nobody listens on is reset by the device: ECONNRESET.
 *
 * The pattern (the host tests generate the same bytes): a 32-bit xorshift generator with
 * state x = 1 (seed 1); for each byte, first step the state in uint32 arithmetic
 *     x ^= x << 13;  x ^= x >> 17;  x ^= x << 5;
 * then the byte is the low 8 bits of x (x & 0xff). The first bytes are
 *     21 01 c5 4f d1 d0 1a b2 (hex).
 *
 * Test hook: with SQUIB_VSOCK_UNIX_DIR=DIR in the environment, port P is the AF_UNIX stream
 * socket DIR/P instead (CID ignored), so scripts/guest/test-init.sh can exercise the tool on
 * hosts without vsock loopback.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Give up on a peer that makes no progress for this long. */
#define IDLE_TIMEOUT_MS 30000
#define BUF_SIZE 65536

static unsigned char buf[BUF_SIZE];

static const char *err_name(int err)
{
	const char *name = strerrorname_np(err);
	return name ? name : strerror(err);
}

/* One pattern generator (see the header). */
static uint8_t pattern_next(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return (uint8_t)(*x & 0xff);
}

/* Parses a decimal number up to max; exits with usage on anything else. */
static unsigned long long parse_num(const char *s, unsigned long long max)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v > max) {
		fprintf(stderr, "squib-vsock: bad number '%s'\n", s);
		exit(2);
	}
	return v;
}

/* A stream socket and the address of CID:PORT (or DIR/PORT with the test hook). */
static int make_socket(unsigned cid, unsigned port, struct sockaddr_storage *sa, socklen_t *len)
{
	const char *dir = getenv("SQUIB_VSOCK_UNIX_DIR");

	memset(sa, 0, sizeof(*sa));
	if (dir) {
		struct sockaddr_un *un = (struct sockaddr_un *)sa;

		un->sun_family = AF_UNIX;
		if (snprintf(un->sun_path, sizeof(un->sun_path), "%s/%u", dir, port) >=
		    (int)sizeof(un->sun_path)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		*len = sizeof(*un);
		return socket(AF_UNIX, SOCK_STREAM, 0);
	}
	struct sockaddr_vm *vm = (struct sockaddr_vm *)sa;

	vm->svm_family = AF_VSOCK;
	vm->svm_cid = cid;
	vm->svm_port = port;
	*len = sizeof(*vm);
	return socket(AF_VSOCK, SOCK_STREAM, 0);
}

/* Echoes one connection until EOF; returns the exit status of the child. */
static int echo_conn(int fd)
{
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "squib-vsock: echo read: %s\n", err_name(errno));
			return 1;
		}
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(fd, buf + off, (size_t)(n - off));

			if (w < 0) {
				if (errno == EINTR)
					continue;
				fprintf(stderr, "squib-vsock: echo write: %s\n", err_name(errno));
				return 1;
			}
			off += w;
		}
	}
	if (close(fd) < 0) {
		fprintf(stderr, "squib-vsock: echo close: %s\n", err_name(errno));
		return 1;
	}
	return 0;
}

static int cmd_echo(unsigned port)
{
	struct sockaddr_storage sa;
	socklen_t len;
	int fd = make_socket(VMADDR_CID_ANY, port, &sa, &len);

	if (fd < 0) {
		fprintf(stderr, "squib-vsock: echo socket: %s\n", err_name(errno));
		return 1;
	}
	if (sa.ss_family == AF_UNIX) /* a stale socket file from an earlier run; none is fine */
		(void)unlink(((struct sockaddr_un *)&sa)->sun_path);
	if (bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 64) < 0) {
		fprintf(stderr, "squib-vsock: echo listen on port %u: %s\n", port, err_name(errno));
		return 1;
	}
	/* Children are reaped by the kernel. */
	if (signal(SIGCHLD, SIG_IGN) == SIG_ERR) {
		fprintf(stderr, "squib-vsock: signal: %s\n", err_name(errno));
		return 1;
	}
	printf("SQUIB vsock echo listening port=%u\n", port);
	if (fflush(stdout) == EOF)
		return 1;
	for (;;) {
		int conn = accept(fd, NULL, NULL);

		if (conn < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			fprintf(stderr, "squib-vsock: accept: %s\n", err_name(errno));
			(void)sleep(1); /* e.g. EMFILE: do not spin */
			continue;
		}
		pid_t pid = fork();

		if (pid == 0) {
			(void)close(fd); /* the child only needs its connection */
			_exit(echo_conn(conn));
		}
		if (pid < 0)
			fprintf(stderr, "squib-vsock: fork: %s\n", err_name(errno));
		if (close(conn) < 0)
			fprintf(stderr, "squib-vsock: close: %s\n", err_name(errno));
	}
}

/* Reports an I/O failure of `send` and returns its exit status. */
static int send_error(unsigned port, int err)
{
	printf("SQUIB vsock send port=%u error=%s\n", port, err_name(err));
	return 1;
}

static int cmd_send(unsigned cid, unsigned port, unsigned long long total)
{
	static unsigned char out[BUF_SIZE];
	struct sockaddr_storage sa;
	socklen_t len;
	uint32_t tx_state = 1, rx_state = 1;
	unsigned long long sent = 0, generated = 0, received = 0;
	size_t out_len = 0, out_off = 0;
	int match = 1, shut = 0;
	int fd = make_socket(cid, port, &sa, &len);

	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, len) < 0)
		return send_error(port, errno);
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return send_error(port, errno);
	for (;;) {
		if (sent == total && !shut) {
			if (shutdown(fd, SHUT_WR) < 0)
				return send_error(port, errno);
			shut = 1;
		}
		if (out_off == out_len && generated < total) {
			unsigned long long left = total - generated;

			out_len = left < sizeof(out) ? (size_t)left : sizeof(out);
			for (size_t i = 0; i < out_len; i++)
				out[i] = pattern_next(&tx_state);
			generated += out_len;
			out_off = 0;
		}
		struct pollfd p = { .fd = fd, .events = POLLIN | (shut ? 0 : POLLOUT) };
		int ready = poll(&p, 1, IDLE_TIMEOUT_MS);

		if (ready < 0) {
			if (errno == EINTR)
				continue;
			return send_error(port, errno);
		}
		if (ready == 0)
			return send_error(port, ETIMEDOUT);
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(fd, buf, sizeof(buf));

			if (n == 0)
				break;
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				return send_error(port, errno);
			for (ssize_t i = 0; i < n; i++)
				if (received + (unsigned long long)i >= total ||
				    buf[i] != pattern_next(&rx_state))
					match = 0;
			if (n > 0)
				received += (unsigned long long)n;
		}
		if (!shut && (p.revents & (POLLOUT | POLLERR))) {
			ssize_t n = write(fd, out + out_off, out_len - out_off);

			if (n < 0 && errno != EAGAIN && errno != EINTR)
				return send_error(port, errno);
			if (n > 0) {
				out_off += (size_t)n;
				sent += (unsigned long long)n;
			}
		}
	}
	if (close(fd) < 0)
		return send_error(port, errno);
	match = match && received == total;
	printf("SQUIB vsock send port=%u sent=%llu received=%llu match=%d\n", port, sent, received,
	       match);
	return match ? 0 : 1;
}

int main(int argc, char **argv)
{
	/* A write to a reset connection must fail with EPIPE, not kill us. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		fprintf(stderr, "squib-vsock: signal: %s\n", err_name(errno));
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && strcmp(argv[1], "echo") == 0)
		return cmd_echo((unsigned)parse_num(argv[2], UINT_MAX));
	if (argc == 5 && strcmp(argv[1], "send") == 0)
		return cmd_send((unsigned)parse_num(argv[2], UINT_MAX),
				(unsigned)parse_num(argv[3], UINT_MAX),
				parse_num(argv[4], 1ULL << 40));
	fprintf(stderr, "usage: squib-vsock echo PORT | squib-vsock send CID PORT BYTES\n");
	return 2;
}
