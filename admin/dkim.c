/*
 * dkim.c - `mailcell dkim keygen|list`: makes an RSA signing key with OpenSSL,
 * keeps its private half in the store and prints the DNS TXT record that
 * publishes its public half (RFC 6376 3.6.1); lists the stored keys.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "address.h"
#include "admin.h"
#include "store_auth.h"

#define BITS_DEFAULT 2048
#define BITS_MIN 1024
#define BITS_MAX 4096
#define SELECTOR_MAX 63
#define DNS_NAME_MAX 253     /* without the trailing dot */
#define TXT_STRING_MAX 255   /* one <character-string>, RFC 1035 3.3 */

struct keygen_args {
	char domain[MC_ADDR_DOMAIN_MAX + 1];
	char selector[SELECTOR_MAX + 1];
	int bits;
};

/* The last OpenSSL error as text, for one-line messages. */
static const char *
ssl_error(void)
{
	unsigned long e = ERR_get_error();
	const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;

	return r != NULL ? r : "unknown OpenSSL error";
}

/* 1..63 of letters, digits, '-', '_' and '.', as dot-separated non-empty labels. */
static int
valid_selector(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > SELECTOR_MAX || s[0] == '.' || s[n - 1] == '.' || strstr(s, "..") != NULL)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && strchr("-_.", s[i]) == NULL)
			return 0;
	return 1;
}

static int
parse_bits(const char *arg, int *bits)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v < BITS_MIN || v > BITS_MAX)
		return fail("--bits '%s': give a key size from %d to %d", arg, BITS_MIN, BITS_MAX);
	*bits = (int)v;
	return 0;
}

/* Checks DOMAIN and SELECTOR and lower-cases both (DNS names ignore case). */
static int
check_names(struct keygen_args *a, const char *domain, const char *selector)
{
	if (strlen(domain) >= sizeof(a->domain))
		return fail("'%s' is not a valid domain name", domain);
	snprintf(a->domain, sizeof(a->domain), "%s", domain);
	if (!mc_addr_valid_domain(a->domain, 0))
		return fail("'%s' is not a valid domain name", domain);
	if (!valid_selector(selector))
		return fail("'%s' is not a valid selector (1 to %d letters, digits, '-', '_' "
		    "or '.')", selector, SELECTOR_MAX);
	for (size_t i = 0; selector[i] != '\0'; i++)
		a->selector[i] = (char)tolower((unsigned char)selector[i]);
	a->selector[strlen(selector)] = '\0';
	if (strlen(a->selector) + strlen("._domainkey.") + strlen(a->domain) > DNS_NAME_MAX)
		return fail("%s._domainkey.%s is longer than a DNS name may be", a->selector,
		    a->domain);
	return 0;
}

/* keygen DOMAIN SELECTOR [--bits N]: 0, 1 on a bad value, EXIT_USAGE. */
static int
keygen_args(int argc, char **argv, struct keygen_args *a)
{
	const char *pos[2];
	int npos = 0;

	a->bits = BITS_DEFAULT;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--bits") == 0) {
			if (i + 1 >= argc)
				return usage();
			if (parse_bits(argv[++i], &a->bits) != 0)
				return 1;
		} else if (npos < 2 && strncmp(argv[i], "--", 2) != 0) {
			pos[npos++] = argv[i];
		} else {
			return usage();
		}
	}
	if (npos != 2)
		return usage();
	return check_names(a, pos[0], pos[1]);
}

/* The private key as unencrypted PKCS#8 PEM (caller wipes and frees). */
static char *
private_pem(EVP_PKEY *key)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *pem = NULL;
	long len;

	if (b == NULL)
		return NULL;
	if (PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) == 1 &&
	    (len = BIO_get_mem_data(b, &data)) > 0 && (pem = malloc((size_t)len + 1)) != NULL) {
		memcpy(pem, data, (size_t)len);
		pem[len] = '\0';
		OPENSSL_cleanse(data, (size_t)len);
	}
	BIO_free(b);
	return pem;
}

/* Base64 of the DER SubjectPublicKeyInfo: the p= tag (caller frees). */
static char *
public_b64(EVP_PKEY *key)
{
	unsigned char *der = NULL;
	char *b64 = NULL;
	int len = i2d_PUBKEY(key, &der);

	if (len <= 0)
		return NULL;
	if ((b64 = malloc(4 * (((size_t)len + 2) / 3) + 1)) != NULL)
		EVP_EncodeBlock((unsigned char *)b64, der, len);
	OPENSSL_free(der);
	return b64;
}

/* NAME. 3600 IN TXT "..." "...": the data split into strings of <= 255 octets. */
static void
print_txt(const struct keygen_args *a, const char *p)
{
	char data[4096];
	size_t len, off;

	snprintf(data, sizeof(data), "v=DKIM1; k=rsa; p=%s", p);
	len = strlen(data);
	printf("%s._domainkey.%s. 3600 IN TXT ", a->selector, a->domain);
	for (off = 0; off < len; off += TXT_STRING_MAX)
		printf("%s\"%.*s\"", off ? " " : "",
		    (int)(len - off < TXT_STRING_MAX ? len - off : TXT_STRING_MAX), data + off);
	putchar('\n');
}

/* Generates the key, stores it, prints the record: the exit code. */
static int
keygen_store(struct ctx *c, const struct keygen_args *a)
{
	EVP_PKEY *key = EVP_RSA_gen((unsigned)a->bits);
	char *pem = NULL, *p = NULL;
	int r;

	if (key == NULL)
		return fail("cannot generate an RSA key: %s", ssl_error());
	pem = private_pem(key);
	p = public_b64(key);
	EVP_PKEY_free(key);
	if (pem == NULL || p == NULL)
		r = fail("cannot encode the RSA key: %s", ssl_error());
	else if ((r = result(c, mc_store_dkim_key_put(c->st, a->domain, a->selector, pem))) == 0)
		print_txt(a, p);
	if (pem != NULL) {
		OPENSSL_cleanse(pem, strlen(pem));
		free(pem);
	}
	free(p);
	return r;
}

static void
print_key(void *ctx, const struct mc_dkim_key *k)
{
	char t[32];

	(void)ctx;
	printf("%s._domainkey.%s\t%s\t%s\t%s\n", k->selector, k->domain, k->domain, k->selector,
	    iso_time(k->created, t, sizeof(t)));
}

int
cmd_dkim(struct ctx *c, int argc, char **argv)
{
	struct keygen_args a;
	int r;

	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return result(c, mc_store_dkim_key_list(c->st, print_key, NULL));
	if (argc < 1 || strcmp(argv[0], "keygen") != 0)
		return usage();
	if ((r = keygen_args(argc, argv, &a)) != 0)
		return r;
	return keygen_store(c, &a);
}
