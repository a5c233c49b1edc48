/*
 * convert.h - 8-bit to 7-bit conversion of a message for a server without
 * 8BITMIME (RFC 6152 section 3): a msgsrc filter that re-encodes 8bit and
 * binary body parts as quoted-printable (RFC 2045 6.7), streaming.
 */
#ifndef RELAY_CONVERT_H
#define RELAY_CONVERT_H

#include <stddef.h>

#include "msgsrc.h"

/*
 * What is converted: every leaf body part (a non-multipart message, or a
 * leaf of a multipart at any depth up to CONVERT_DEPTH_MAX) whose
 * Content-Transfer-Encoding is 8bit or binary, or absent/7bit but with
 * 8-bit octets (or NUL) in it, gets its CTE replaced by quoted-printable
 * and its body encoded (text keeps its CRLF line breaks; other types
 * encode every CR and LF). MIME-Version: 1.0 is added when missing.
 * A message without any octet above 127 passes through byte-identical.
 *
 * Not possible (the message must bounce or go elsewhere): 8-bit octets in a
 * header field (that would need RFC 2047 rewriting), in a message part (message/rfc822...),
 * in a base64/quoted-printable/unknown-CTE part, in a multipart that cannot
 * be parsed (no boundary, nested deeper than CONVERT_DEPTH_MAX), or too
 * many parts. 8-bit octets in a multipart preamble or epilogue (text that
 * readers ignore) become "?".
 */
#define CONVERT_DEPTH_MAX 10

enum convert_result {
	CONVERT_ERROR = -1,       /* the source could not be read, or no memory */
	CONVERT_IMPOSSIBLE = 0,
	CONVERT_POSSIBLE = 1,
};

/*
 * Reads `in` once (open, read to the end, close) and tells whether it can
 * be converted; why gets a one-line reason for IMPOSSIBLE and ERROR.
 */
enum convert_result convert_7bit_check(const struct msgsrc *in, char *why, size_t whylen);

/*
 * Makes `out` a source yielding the 7-bit form of `in` (which must outlive
 * it). Reads nothing yet: the first out->open reads `in` once to plan the
 * conversion (kept for later opens), then each open restarts `in` for the
 * output. out->open fails (-1) when the source cannot be read or the
 * conversion is not possible (convert_7bit_impossible tells which; the
 * reason is in out->error). 0, or -1 when out of memory.
 */
int convert_7bit_open(struct msgsrc *out, const struct msgsrc *in);

/* 1 when the last out->open failed because conversion is not possible. */
int convert_7bit_impossible(const struct msgsrc *out);

/* Frees what convert_7bit_open made (closes `in` if still open). NULL ctx ok. */
void convert_7bit_free(struct msgsrc *out);

#endif
