/* fastpath_free() and a client connection ending at the same time: the
 * daemon must not shut down an fd number its client thread closed already
 * (that number may be another file's by then).
 *
 * Linked with -Wl,--wrap=close: the client thread's close() of its
 * connection hands the number straight to a socket of this test (dup2(),
 * as any thread of the daemon opening a file could get it), lets
 * fastpath_free() run, and watches for up to two seconds whether that
 * socket is shut down. With the connection still listed once its fd is
 * closed, fastpath_free() shuts it down within that time; with the fd
 * closed only once off the list (under the lock fastpath_free() takes),
 * it cannot. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "daemon.h"
#include "fastpath.h"

int __real_close(int fd);
int __wrap_close(int fd);

static pthread_t main_thread;
static atomic_int armed;
static sem_t closed;	/* the client thread's close() happened */
static int reused = -1; /* our socket on the number it closed */
static int watch = -1;	/* its peer: sees a shutdown as a hangup */
static atomic_int shut; /* whether it saw one */

int __wrap_close(int fd)
{
	struct stat st;
	int sp[2], r;

	if (pthread_equal(pthread_self(), main_thread) || fstat(fd, &st) < 0 ||
	    !S_ISSOCK(st.st_mode) || !atomic_exchange(&armed, 0))
		return __real_close(fd);
	/* The pair first: made after the close, it would take the number. */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		exit(1);
	r = __real_close(fd);
	if (dup2(sp[0], fd) != fd) {
		fprintf(stderr, "socketpair/dup2: %s\n", strerror(errno));
		exit(1);
	}
	__real_close(sp[0]);
	reused = fd;
	watch = sp[1];
	sem_post(&closed);
	{
		struct pollfd p = { .fd = watch, .events = POLLRDHUP };

		if (poll(&p, 1, 2000) == 1 &&
		    (p.revents & (POLLRDHUP | POLLHUP)))
			atomic_store(&shut, 1);
	}
	return r;
}

int main(void)
{
	struct daemon d = { 0 };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct fastpath *fp;
	char garbage[16] = { 0 };
	int c, err;

	main_thread = pthread_self();
	sem_init(&closed, 0, 0);
	err = fastpath_new(&d, &fp);
	if (err) {
		printf("SKIP: no fast-path socket here (%s)\n", strerror(-err));
		return 77;
	}
	/* No mount: grants fail, which this test does not need. */
	CHECK_EQ(fastpath_start(fp, "/nonexistent-weightfs-test"), 0);
	c = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	CHECK(c >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fastpath_socket(fp));
	CHECK_EQ(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);
	/* Not a request: the daemon drops the client, closing its fd. */
	atomic_store(&armed, 1);
	CHECK_EQ(send(c, garbage, sizeof(garbage), MSG_NOSIGNAL),
		 (ssize_t)sizeof(garbage));
	while (sem_wait(&closed) < 0 && errno == EINTR)
		;
	fastpath_free(fp);
	CHECK(!atomic_load(&shut),
	      "fastpath_free() shut down fd %d after its connection had "
	      "closed it (a reused number)",
	      reused);
	__real_close(reused);
	__real_close(watch);
	__real_close(c);
	printf("fastpath_conn: ok\n");
	return 0;
}
