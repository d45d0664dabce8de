/* Proxies: which proxy each request goes through, and failing over to the
 * next of a list when one cannot be reached. Every curl handle gets its
 * proxy in http_setup_common(), so data GETs, HEADs, listings, seek tables
 * and credential requests all go the same way.
 *
 * -o proxy=URL[|URL...][|direct]: the first of the list that is up; one
 * whose connection failed is passed over for PROXY_DOWN_MS, then tried
 * again. "direct" (last) is the origin itself, so a node whose rack cache
 * dies reads on from the origin. http://, https:// (TLS to the proxy),
 * socks4(a):// and socks5(h):// URLs. Credentials never in the URL (it is
 * on the command line): -o proxy_credentials=FILE holds user:password.
 * $NO_PROXY is honoured, and AWS's instance metadata addresses are never
 * proxied.
 *
 * -o proxy=none: no proxy, whatever the environment says. Unset: libcurl
 * reads $http_proxy, $HTTPS_PROXY, $ALL_PROXY and $NO_PROXY (and
 * $HTTP_PROXY: proxy_init() copies it to $http_proxy; the daemon is no CGI
 * script, so httpoxy does not apply).
 *
 * Thread-safe after proxy_init(): the list is read-only, its state
 * atomics. */
#ifndef WFS_FS_PROXY_H
#define WFS_FS_PROXY_H

#include <curl/curl.h>
#include <stddef.h>

struct options;

#define PROXY_MAX 4
#define PROXY_DOWN_MS 30000u

/*
 * proxy_check() - whether @spec is a valid proxy= value; on failure a
 * message (why) in @msg. @return 0 or -EINVAL.
 */
int proxy_check(const char *spec, char *msg, size_t msglen);

/*
 * proxy_init() - use @o's proxy settings (proxy, proxy_credentials) for
 * every handle set up from now on; reads the credentials file. Call once,
 * before any thread starts (it may setenv()).
 * @return 0, or a negative errno with a message in *ret_msg (malloc'd).
 */
int proxy_init(const struct options *o, char **ret_msg);

/* proxy_setup() - set @h's proxy options for its next transfer. */
int proxy_setup(CURL *h);

/*
 * proxy_judge() - a transfer of @h ended with @code (@err its errno):
 * when it could not reach the proxy of the list it went through, that
 * proxy is passed over from now on and -EAGAIN returned (another attempt
 * goes another way); else @err.
 */
int proxy_judge(CURL *h, CURLcode code, int err);

/*
 * proxy_data_headers() - headers for data GETs that -o p2p_tag asks for
 * (Dragonfly's X-Dragonfly-Tag, -Use-P2P, -Piece-Length), appended to
 * *@hdrs; none before proxy_init(). @return 0 or -ENOMEM.
 */
int proxy_data_headers(struct curl_slist **hdrs);

#endif
