/* The anchor in C: OpenSSL's SSL_stateless() answering captured ClientHello1s over memory BIOs.
 *
 *   cc -O2 -o openssl_stateless bench/openssl_stateless.c -lssl -lcrypto   (bench.hrr_rate does)
 *   openssl_stateless CERT.pem KEY.pem SECONDS CLIENT_HELLO.bin...
 *
 * The same work as bench/openssl_anchor.py without ctypes and Python callbacks: one SSL_CTX
 * (TLS 1.3 only, our cipher suite order, server preference, no tickets), and per ClientHello a
 * fresh SSL object, two memory BIOs, BIO_write, SSL_stateless, BIO_read, SSL_free.  The cookie
 * callbacks are C: HMAC-SHA256(a random key, the client's IPv4 address), 32 bytes, compared with
 * CRYPTO_memcmp (the binding our cookie carries as associated data).  The ClientHellos are used
 * in turn for SECONDS; every answer is checked to be a HelloRetryRequest.
 *
 * Prints one line: "<HelloRetryRequests> <seconds>".  Exit status 1 on any failure.
 */
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_HELLOS 64
#define MAX_HELLO_SIZE 65536

static const unsigned char HRR_RANDOM[32] = {
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C};
static const unsigned char PEER_ADDRESS[4] = {203, 0, 113, 7}; /* bench.common.PEER */
static unsigned char hmac_key[32];

static int generate_cookie(SSL *ssl, unsigned char *cookie, size_t *cookie_len) {
    unsigned int length = 0;
    (void)ssl;
    if (HMAC(EVP_sha256(), hmac_key, sizeof hmac_key, PEER_ADDRESS, sizeof PEER_ADDRESS, cookie,
             &length) == NULL)
        return 0;
    *cookie_len = length;
    return 1;
}

static int verify_cookie(SSL *ssl, const unsigned char *cookie, size_t cookie_len) {
    unsigned char expected[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    (void)ssl;
    if (HMAC(EVP_sha256(), hmac_key, sizeof hmac_key, PEER_ADDRESS, sizeof PEER_ADDRESS, expected,
             &length) == NULL)
        return 0;
    return cookie_len == length && CRYPTO_memcmp(cookie, expected, length) == 0;
}

static void fail(const char *what) {
    fprintf(stderr, "openssl_stateless: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* One ClientHello1 in, one HelloRetryRequest out, nothing kept: 1 if it was an HRR. */
static int answer(SSL_CTX *ctx, const unsigned char *hello, int size, unsigned char *out) {
    SSL *ssl = SSL_new(ctx);
    BIO *in = BIO_new(BIO_s_mem()), *sent = BIO_new(BIO_s_mem());
    int read, ok;
    if (ssl == NULL || in == NULL || sent == NULL) fail("SSL_new or BIO_new");
    SSL_set_bio(ssl, in, sent);
    if (BIO_write(in, hello, size) != size) fail("BIO_write");
    ok = SSL_stateless(ssl) == 0; /* 0: a HelloRetryRequest was sent */
    read = BIO_read(sent, out, MAX_HELLO_SIZE);
    ok = ok && read >= 43 && out[0] == 22 && out[5] == 2 && memcmp(out + 11, HRR_RANDOM, 32) == 0;
    SSL_free(ssl);
    ERR_clear_error();
    return ok;
}

int main(int argc, char **argv) {
    static unsigned char hellos[MAX_HELLOS][MAX_HELLO_SIZE], out[MAX_HELLO_SIZE];
    int sizes[MAX_HELLOS], count = argc - 4, i;
    double seconds, started, elapsed;
    long answered = 0;
    SSL_CTX *ctx;

    if (argc < 5 || count > MAX_HELLOS) {
        fprintf(stderr, "usage: %s CERT.pem KEY.pem SECONDS CLIENT_HELLO.bin...\n", argv[0]);
        return 2;
    }
    seconds = atof(argv[3]);
    for (i = 0; i < count; i++) {
        FILE *file = fopen(argv[4 + i], "rb");
        if (file == NULL) fail(argv[4 + i]);
        sizes[i] = (int)fread(hellos[i], 1, MAX_HELLO_SIZE, file);
        fclose(file);
    }
    if (RAND_bytes(hmac_key, sizeof hmac_key) != 1) fail("RAND_bytes");
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) fail("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
    if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                      "TLS_CHACHA20_POLY1305_SHA256") != 1)
        fail("SSL_CTX_set_ciphersuites");
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[1]) != 1) fail("certificate");
    if (SSL_CTX_use_PrivateKey_file(ctx, argv[2], SSL_FILETYPE_PEM) != 1) fail("private key");
    if (SSL_CTX_check_private_key(ctx) != 1) fail("the key does not match the certificate");
    SSL_CTX_set_stateless_cookie_generate_cb(ctx, generate_cookie);
    SSL_CTX_set_stateless_cookie_verify_cb(ctx, verify_cookie);

    for (i = 0; i < count; i++) /* every ClientHello must get its HRR, before the clock runs */
        if (!answer(ctx, hellos[i], sizes[i], out)) fail("a ClientHello got no HelloRetryRequest");
    started = now();
    do {
        for (i = 0; i < count; i++) {
            if (!answer(ctx, hellos[i], sizes[i], out)) fail("no HelloRetryRequest");
            answered++;
        }
        elapsed = now() - started;
    } while (elapsed < seconds);
    printf("%ld %.6f\n", answered, elapsed);
    SSL_CTX_free(ctx);
    return 0;
}
