/* aws_creds: shared credentials/config files and profiles, environment
 * credentials, container/IMDS JSON and STS XML responses. No network: the
 * services are tested by tests/integration/test_s3_creds.py. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws_creds.h"
#include "opts.h"
#include "check.h"

static bool eq(const char *a, const char *b)
{
	return a && b && !strcmp(a, b);
}

static char dir[] = "/tmp/test_aws_creds.XXXXXX";

static char *write_file(const char *name, const char *text)
{
	char *p = NULL;
	FILE *f;

	if (asprintf(&p, "%s/%s", dir, name) < 0)
		abort();
	f = fopen(p, "we");
	if (!f)
		abort();
	fputs(text, f);
	fclose(f);
	return p;
}

static void profiles(void)
{
	char *cred = write_file(
		"credentials",
		"# comment\n"
		"[default]\n"
		"aws_access_key_id = AKIDDEFAULT\n"
		"aws_secret_access_key=secret/default+\n"
		"\n"
		"[team]\n"
		"  ; indented comment-like line is a continuation: ignored\n"
		"aws_access_key_id = AKIDTEAM  \n"
		"aws_secret_access_key = teamsecret\n"
		"aws_session_token = tok=en\n"
		"[broken\n"
		"aws_access_key_id = NOPE\n");
	char *conf = write_file(
		"config",
		"[default]\n"
		"region = eu-west-1\n"
		"[profile team]\n"
		"region=ap-south-1\n"
		"aws_access_key_id = AKIDFROMCONFIG\n"
		"s3 =\n"
		"  addressing_style = path\n"
		"[team]\n" /* not a profile section in the config file */
		"region = wrong\n"
		"[profile irsa]\n"
		"role_arn = arn:aws:iam::1:role/r\n"
		"web_identity_token_file = /var/run/token\n"
		"[profile   sso]\n"
		"sso_session = corp\n");
	struct aws_profile p;

	CHECK(aws_profile_load(cred, conf, "default", &p) == 0, "default");
	CHECK(p.found && eq(p.access_key_id, "AKIDDEFAULT") &&
		      eq(p.secret_access_key, "secret/default+") &&
		      !p.session_token && eq(p.region, "eu-west-1"),
	      "default values");
	CHECK(p.where && strstr(p.where, "profile default in "), "where: %s",
	      p.where);
	aws_profile_done(&p);

	CHECK(aws_profile_load(cred, conf, "team", &p) == 0, "team");
	CHECK(eq(p.access_key_id, "AKIDTEAM") &&
		      eq(p.secret_access_key, "teamsecret") &&
		      eq(p.session_token, "tok=en") &&
		      eq(p.region, "ap-south-1"),
	      "team values: %s %s", p.access_key_id, p.region);
	aws_profile_done(&p);

	CHECK(aws_profile_load(cred, conf, "irsa", &p) == 0 && p.found &&
		      eq(p.role_arn, "arn:aws:iam::1:role/r") &&
		      eq(p.web_identity_token_file, "/var/run/token") &&
		      !p.access_key_id,
	      "irsa");
	aws_profile_done(&p);

	CHECK(aws_profile_load(cred, conf, "sso", &p) == 0 && p.found &&
		      eq(p.sso, "corp"),
	      "sso");
	aws_profile_done(&p);

	CHECK(aws_profile_load(cred, conf, "nosuch", &p) == 0 && !p.found,
	      "missing profile");
	aws_profile_done(&p);

	CHECK(aws_profile_load("/nonexistent/c", NULL, "default", &p) == 0 &&
		      !p.found,
	      "missing files");
	aws_profile_done(&p);
	unlink(cred);
	unlink(conf);
	free(cred);
	free(conf);
}

static void paths(void)
{
	char *c = NULL, *f = NULL, *n = NULL;

	setenv("HOME", "/home/u", 1);
	unsetenv("AWS_SHARED_CREDENTIALS_FILE");
	unsetenv("AWS_CONFIG_FILE");
	unsetenv("AWS_PROFILE");
	CHECK(aws_profile_paths(NULL, &c, &f, &n) == 0 &&
		      eq(c, "/home/u/.aws/credentials") &&
		      eq(f, "/home/u/.aws/config") && eq(n, "default"),
	      "defaults: %s %s %s", c, f, n);
	free(c);
	free(f);
	free(n);
	setenv("AWS_SHARED_CREDENTIALS_FILE", "~/creds", 1);
	setenv("AWS_CONFIG_FILE", "/etc/aws", 1);
	setenv("AWS_PROFILE", "envprof", 1);
	CHECK(aws_profile_paths(NULL, &c, &f, &n) == 0 &&
		      eq(c, "/home/u/creds") && eq(f, "/etc/aws") &&
		      eq(n, "envprof"),
	      "env: %s %s %s", c, f, n);
	free(c);
	free(f);
	free(n);
	CHECK(aws_profile_paths("explicit", &c, &f, &n) == 0 &&
		      eq(n, "explicit"),
	      "explicit: %s", n);
	free(c);
	free(f);
	free(n);
	unsetenv("AWS_SHARED_CREDENTIALS_FILE");
	unsetenv("AWS_CONFIG_FILE");
	unsetenv("AWS_PROFILE");
}

static void json(void)
{
	const char *ok = "{\"Code\":\"Success\",\"AccessKeyId\":\"ASIA1\","
			 "\"SecretAccessKey\":\"s/+=\",\"Token\":\"t\","
			 "\"Expiration\":\"2030-01-02T03:04:05Z\"}";
	const char *ecs = "{\"AccessKeyId\":\"ASIA2\",\"SecretAccessKey\":"
			  "\"s\",\"Token\":\"t\",\"Expiration\":"
			  "\"2030-01-02T03:04:05.123+00:00\"}";
	const char *bad[] = {
		"",
		"[]",
		"{\"AccessKeyId\":\"A\"}",
		"{\"Code\":\"Failure\",\"Message\":\"no role\"}",
		("{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"s\","
		 "\"Expiration\":\"tomorrow\"}"),
		"{\"AccessKeyId\":1,\"SecretAccessKey\":\"s\"}",
	};
	struct aws_credentials c;
	char *msg = NULL;

	CHECK(aws_creds_parse_json(ok, strlen(ok), &c, &msg) == 0 &&
		      eq(c.access_key_id, "ASIA1") &&
		      eq(c.secret_access_key, "s/+=") &&
		      eq(c.session_token, "t") && c.expiration == 1893553445,
	      "imds json");
	aws_credentials_done(&c);
	CHECK(aws_creds_parse_json(ecs, strlen(ecs), &c, &msg) == 0 &&
		      c.expiration == 1893553445,
	      "ecs json");
	aws_credentials_done(&c);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		msg = NULL;
		CHECK(aws_creds_parse_json(bad[i], strlen(bad[i]), &c, &msg) ==
			      -EBADMSG,
		      "bad json %zu", i);
		CHECK(msg, "message for bad json %zu", i);
		free(msg);
	}
}

static void sts(void)
{
	const char *ok =
		"<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts."
		"amazonaws.com/doc/2011-06-15/"
		"\"><AssumeRoleWithWebIdentityResult>"
		"<SubjectFromWebIdentityToken>x</SubjectFromWebIdentityToken>"
		"<Credentials><SessionToken>tok&amp;+/=</SessionToken>"
		"<SecretAccessKey>sec</SecretAccessKey><Expiration>"
		"2030-01-02T03:04:05Z</Expiration><AccessKeyId>ASIA3"
		"</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult>"
		"</AssumeRoleWithWebIdentityResponse>";
	const char *bad[] = {
		"",
		"<ErrorResponse><Error><Code>X</Code></Error></ErrorResponse>",
		("<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentity"
		 "Result><Credentials><AccessKeyId>A</AccessKeyId>"
		 "</Credentials></AssumeRoleWithWebIdentityResult>"
		 "</AssumeRoleWithWebIdentityResponse>"),
		("<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentity"
		 "Result><Credentials><AccessKeyId>A</AccessKeyId>"),
	};
	struct aws_credentials c;

	CHECK(aws_creds_parse_sts(ok, strlen(ok), &c) == 0 &&
		      eq(c.access_key_id, "ASIA3") &&
		      eq(c.secret_access_key, "sec") &&
		      eq(c.session_token, "tok&+/=") &&
		      c.expiration == 1893553445,
	      "sts");
	aws_credentials_done(&c);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(aws_creds_parse_sts(bad[i], strlen(bad[i]), &c) ==
			      -EBADMSG,
		      "bad sts %zu", i);
}

static void chain(void)
{
	struct options o = { 0 };
	struct aws_creds *c = NULL;
	struct aws_credentials cr;
	char *msg = NULL;
	char *cred =
		write_file("chain-creds", "[p]\naws_access_key_id = AKIDP\n"
					  "aws_secret_access_key = sp\n");

	setenv("HOME", dir, 1);
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
	unsetenv("AWS_WEB_IDENTITY_TOKEN_FILE");
	unsetenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	unsetenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");

	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "secret-env", 1);
	setenv("AWS_SESSION_TOKEN", "token-env", 1);
	CHECK(aws_creds_new(&o, "us-east-1", &c, &msg) == 0, "env: %s", msg);
	CHECK(c && eq(aws_creds_provider(c), "environment"), "provider");
	CHECK(c && aws_creds_get(c, &cr, NULL) == 0 &&
		      eq(cr.access_key_id, "AKIDENV") &&
		      eq(cr.session_token, "token-env") && !cr.expiration,
	      "env values");
	aws_credentials_done(&cr);
	aws_creds_free(c);

	/* An explicit profile skips the environment. */
	setenv("AWS_SHARED_CREDENTIALS_FILE", cred, 1);
	o.profile = "p";
	c = NULL;
	CHECK(aws_creds_new(&o, "us-east-1", &c, &msg) == 0, "profile");
	CHECK(c && aws_creds_get(c, &cr, NULL) == 0 &&
		      eq(cr.access_key_id, "AKIDP") && !cr.session_token,
	      "profile values");
	aws_credentials_done(&cr);
	aws_creds_free(c);
	o.profile = "missing";
	CHECK(aws_creds_new(&o, "us-east-1", &c, &msg) == -ENOENT && msg &&
		      strstr(msg, "profile missing not found"),
	      "missing profile: %s", msg);
	free(msg);
	msg = NULL;
	o.profile = NULL;

	unsetenv("AWS_SECRET_ACCESS_KEY");
	CHECK(aws_creds_new(&o, "us-east-1", &c, &msg) == -EINVAL && msg &&
		      strstr(msg, "AWS_SECRET_ACCESS_KEY"),
	      "partial env: %s", msg);
	free(msg);
	msg = NULL;
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("AWS_SHARED_CREDENTIALS_FILE");

	CHECK(aws_creds_new(&o, "us-east-1", &c, &msg) == -ENOKEY && msg &&
		      strstr(msg, "no AWS credentials found"),
	      "nothing: %s", msg);
	free(msg);
	unlink(cred);
	free(cred);
}

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	profiles();
	paths();
	json();
	sts();
	chain();
	rmdir(dir);
	printf("aws_creds: ok\n");
	return 0;
}
