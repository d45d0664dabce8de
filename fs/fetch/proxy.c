#include "proxy.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "env.h"
#include "opts.h"

/* Set by proxy_init(), read-only afterwards. */
static struct {
	bool set;	      /* -o proxy= given */
	bool none;	      /* proxy=none */
	unsigned n;	      /* entries of the list */
	char *url[PROXY_MAX]; /* NULL: direct */
	char *userpwd;	      /* user:password, or NULL; never shown */
	char *noproxy;	      /* $NO_PROXY and the metadata addresses */
	const char *p2p_tag;  /* -o p2p_tag, or NULL */
	uint64_t piece;	      /* its piece length: range_align */
} conf;

/* Per entry: passed over in [down_since, down_until) (monotonic ms). */
static atomic_uint_fast64_t down_since[PROXY_MAX], down_until[PROXY_MAX];

/* Never through a proxy: the EC2 and ECS credential endpoints. */
#define METADATA_HOSTS "169.254.169.254,169.254.170.2,fd00:ec2::254"

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *const schemes[] = {
	"http://",    "https://",  "socks4://",
	"socks4a://", "socks5://", "socks5h://"
};

/* Check one entry of a list, [s, s + len). */
static int check_one(const char *s, size_t len, bool last, char *msg,
		     size_t msglen)
{
	const char *host = NULL, *end = s + len, *p;

	if (len == 6 && !strncmp(s, "direct", 6)) {
		if (!last) {
			snprintf(msg, msglen, "direct must come last");
			return -EINVAL;
		}
		return 0;
	}
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		if (len > strlen(schemes[i]) &&
		    !strncmp(s, schemes[i], strlen(schemes[i])))
			host = s + strlen(schemes[i]);
	if (!host) {
		snprintf(msg, msglen,
			 "'%.*s' is not an http://, https://, socks4:// or "
			 "socks5:// URL, nor direct",
			 (int)len, s);
		return -EINVAL;
	}
	for (p = host; p < end && *p != '/'; p++) {
		if (*p == '@') {
			snprintf(msg, msglen,
				 "no credentials in the URL (the command line "
				 "is public): use proxy_credentials=FILE or "
				 "$HTTPS_PROXY");
			return -EINVAL;
		}
		if ((unsigned char)*p <= ' ' || *p == 0x7f) {
			snprintf(msg, msglen, "bad character in '%.*s'",
				 (int)len, s);
			return -EINVAL;
		}
	}
	if (p == host) {
		snprintf(msg, msglen, "'%.*s' names no host", (int)len, s);
		return -EINVAL;
	}
	return 0;
}

int proxy_check(const char *spec, char *msg, size_t msglen)
{
	unsigned n = 0;
	const char *s = spec;

	if (!strcmp(spec, "none"))
		return 0;
	for (;;) {
		const char *bar = strchr(s, '|');
		size_t len = bar ? (size_t)(bar - s) : strlen(s);
		int err;

		if (++n > PROXY_MAX) {
			snprintf(msg, msglen, "at most %d entries", PROXY_MAX);
			return -EINVAL;
		}
		if (!len) {
			snprintf(msg, msglen, "an empty entry");
			return -EINVAL;
		}
		err = check_one(s, len, !bar, msg, msglen);
		if (err)
			return err;
		if (!bar)
			return 0;
		s = bar + 1;
	}
}

/* The first line of @path, without its newline: user:password. */
static int read_credentials(const char *path, char **ret, char **ret_msg)
{
	char buf[1024];
	int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0;
	ssize_t n;

	if (fd < 0) {
		err = -errno;
		goto fail;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	err = n < 0 ? -errno : 0;
	close(fd);
	if (err)
		goto fail;
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (!strchr(buf, ':')) {
		err = -EINVAL;
		if (asprintf(ret_msg,
			     "proxy_credentials %s: expected user:password "
			     "on its first line",
			     path) < 0)
			*ret_msg = NULL;
		return err;
	}
	*ret = strdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return *ret ? 0 : -ENOMEM;
fail:
	if (asprintf(ret_msg, "proxy_credentials %s: %s", path,
		     strerror(-err)) < 0)
		*ret_msg = NULL;
	return err;
}

int proxy_init(const struct options *o, char **ret_msg)
{
	const char *s, *np;
	char msg[256];
	int err;

	*ret_msg = NULL;
	conf.p2p_tag = o->p2p_tag;
	conf.piece = o->range_align;
	if (!o->proxy) {
		/* libcurl reads only the lower-case http_proxy. */
		if (!getenv("http_proxy") && env_get("HTTP_PROXY"))
			setenv("http_proxy", env_get("HTTP_PROXY"), 0);
		return 0;
	}
	if (proxy_check(o->proxy, msg, sizeof(msg)) < 0) {
		if (asprintf(ret_msg, "bad proxy: %s", msg) < 0)
			*ret_msg = NULL;
		return -EINVAL;
	}
	conf.set = true;
	if (!strcmp(o->proxy, "none")) {
		conf.none = true;
		return 0;
	}
	for (s = o->proxy; s; s = strchr(s, '|') ? strchr(s, '|') + 1 : NULL) {
		size_t len = strcspn(s, "|");
		bool direct = len == 6 && !strncmp(s, "direct", 6);

		conf.url[conf.n] = direct ? NULL : strndup(s, len);
		if (!direct && !conf.url[conf.n])
			return -ENOMEM;
		conf.n++;
	}
	if (o->proxy_credentials[0] &&
	    (err = read_credentials(o->proxy_credentials, &conf.userpwd,
				    ret_msg)) < 0)
		return err;
	np = env_get("no_proxy") ? env_get("no_proxy") : env_get("NO_PROXY");
	if (asprintf(&conf.noproxy, "%s%s" METADATA_HOSTS, np ? np : "",
		     np ? "," : "") < 0)
		return -ENOMEM;
	return 0;
}

/* Which entry each handle was last set up with: a direct-mapped table,
 * a colliding handle overwrites (proxy_judge() then falls back to
 * entry_at() of the transfer's start). */
#define CHOSEN_SLOTS 1024
static struct {
	const CURL *h;
	unsigned entry;
} chosen[CHOSEN_SLOTS]; /* protected by chosen_lock */
static pthread_mutex_t chosen_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned chosen_slot(const CURL *h)
{
	uintptr_t v = (uintptr_t)h;

	return (unsigned)((v >> 4) ^ (v >> 14)) % CHOSEN_SLOTS;
}

/* The entry a transfer started at @t went through: the first one not
 * passed over at @t (all passed over: the one back soonest). */
static unsigned entry_at(uint64_t t)
{
	unsigned best = 0;

	for (unsigned i = 0; i < conf.n; i++) {
		uint64_t since = atomic_load_explicit(&down_since[i],
						      memory_order_relaxed);
		uint64_t until = atomic_load_explicit(&down_until[i],
						      memory_order_relaxed);

		if (!(since <= t && t < until))
			return i;
		if (until < atomic_load_explicit(&down_until[best],
						 memory_order_relaxed))
			best = i;
	}
	return best;
}

int proxy_setup(CURL *h)
{
	CURLcode c = CURLE_OK;
	unsigned i;

	if (!conf.set)
		return 0;
	if (conf.none)
		return curl_easy_setopt(h, CURLOPT_PROXY, "") ? -EINVAL : 0;
	i = entry_at(now_ms());
	pthread_mutex_lock(&chosen_lock);
	chosen[chosen_slot(h)].h = h;
	chosen[chosen_slot(h)].entry = i;
	pthread_mutex_unlock(&chosen_lock);
	c = curl_easy_setopt(h, CURLOPT_PROXY, conf.url[i] ? conf.url[i] : "");
	if (!c && conf.url[i] && conf.userpwd)
		c = curl_easy_setopt(h, CURLOPT_PROXYUSERPWD, conf.userpwd);
	if (!c)
		c = curl_easy_setopt(h, CURLOPT_NOPROXY, conf.noproxy);
	return c == CURLE_OUT_OF_MEMORY ? -ENOMEM : c ? -EINVAL : 0;
}

int proxy_judge(CURL *h, CURLcode code, int err)
{
	curl_off_t took = 0;
	uint64_t now, start;
	unsigned i;
	bool found;

	if (!conf.n ||
	    (code != CURLE_COULDNT_CONNECT &&
	     code != CURLE_COULDNT_RESOLVE_PROXY && code != CURLE_PROXY))
		return err;
	now = now_ms();
	pthread_mutex_lock(&chosen_lock);
	found = chosen[chosen_slot(h)].h == h;
	i = chosen[chosen_slot(h)].entry;
	pthread_mutex_unlock(&chosen_lock);
	if (!found) {
		curl_easy_getinfo(h, CURLINFO_TOTAL_TIME_T, &took);
		start = now - (uint64_t)took / 1000u - 1;
		i = entry_at(start);
	}
	if (!conf.url[i])
		return err; /* direct: the origin's own failure */
	/* Passed over already (another transfer failed first): as is. */
	if (atomic_load_explicit(&down_until[i], memory_order_relaxed) <= now) {
		atomic_store_explicit(&down_since[i], now,
				      memory_order_relaxed);
		atomic_store_explicit(&down_until[i], now + PROXY_DOWN_MS,
				      memory_order_relaxed);
	}
	return -EAGAIN;
}

int proxy_data_headers(struct curl_slist **hdrs)
{
	char line[256];
	struct curl_slist *l;

	if (!conf.p2p_tag)
		return 0;
	/* Dragonfly: the task is the URL (less signature parameters), tag
	 * and piece length; the range is served from its pieces. */
	snprintf(line, sizeof(line), "X-Dragonfly-Tag: %s", conf.p2p_tag);
	if (!(l = curl_slist_append(*hdrs, line)))
		return -ENOMEM;
	*hdrs = l;
	if (!(l = curl_slist_append(*hdrs, "X-Dragonfly-Use-P2P: true")))
		return -ENOMEM;
	*hdrs = l;
	snprintf(line, sizeof(line), "X-Dragonfly-Piece-Length: %llumib",
		 (unsigned long long)(conf.piece >> 20));
	if (!(l = curl_slist_append(*hdrs, line)))
		return -ENOMEM;
	*hdrs = l;
	return 0;
}
