/*-------------------------------------------------------------------------
 *
 * output.c
 *		What the jobq command shows a person, made safe to show: the
 *		escaping of control characters, and the error messages.
 *
 * Queue and task names, job results and errors, what a job's process
 * printed on stderr, the server's messages and the command's own
 * arguments are all chosen by someone else than the person who reads
 * them.  Printed raw, an escape sequence in one of them would act on the
 * terminal (clear it, move the cursor, retitle the window), and a newline
 * would start a line of its own in a log (a forged "completed job" line).
 * So every human-readable output goes through append_escaped(), and JSON
 * outputs through cli_json_safe(), which keeps them valid JSON.
 *
 * IDENTIFICATION
 *		cli/output.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "jobq_cli.h"
#include "mb/pg_wchar.h"

/* how many results of cli_esc() and cli_json_safe() stay valid */
#define ESC_RING	16

/*
 * The length of the valid UTF-8 sequence at s (at most left bytes), or 0
 * if the bytes there are not one (a stray byte, a cut or overlong
 * sequence, a surrogate).
 */
static int
utf8_len(const unsigned char *s, size_t left)
{
	int			n = pg_utf_mblen(s);

	if (n < 1 || (size_t) n > left || !pg_utf8_islegal(s, n))
		return 0;
	return n;
}

/*
 * Code points that act on a terminal or on the reading of a line though
 * they are not C0 controls: the C1 controls (U+009B is CSI, as ESC [ is),
 * the line and paragraph separators, and the bidirectional embeddings,
 * overrides and isolates (which make text read other than it is).
 */
static bool
unsafe_code_point(pg_wchar cp)
{
	return (cp >= 0x80 && cp <= 0x9F) ||
		cp == 0x2028 || cp == 0x2029 ||
		(cp >= 0x202A && cp <= 0x202E) ||
		(cp >= 0x2066 && cp <= 0x2069);
}

/*
 * Append s[0..len-1] to buf with what could act on a terminal or a log
 * escaped, for text (json false) or inside a JSON text (json true).  For
 * text: newline, carriage return and tab as \n, \r, \t; the other C0
 * controls, DEL and bytes that are not valid UTF-8 as \xHH.  For JSON
 * (whose strings the server already escapes C0 controls in; outside
 * strings valid JSON has only whitespace among them, which is kept): DEL
 * and any other C0 control as \uHHHH, bytes that are not valid UTF-8 as
 * \uFFFD.  Both: the code points of unsafe_code_point() as \uHHHH, and
 * everything else, backslash included, as it is, so that ordinary text
 * reads as it did.
 */
static void
append_safe(PQExpBuffer buf, const char *s, size_t len, bool json)
{
	const unsigned char *p = (const unsigned char *) s;
	size_t		i = 0;

	while (i < len)
	{
		unsigned char c = p[i];
		int			n;

		if (c == '\n' || c == '\r' || c == '\t')
		{
			if (json)
				appendPQExpBufferChar(buf, (char) c);
			else
				appendPQExpBufferStr(buf, c == '\n' ? "\\n" : c == '\r' ? "\\r" : "\\t");
		}
		else if (c < 0x20 || c == 0x7F)
			appendPQExpBuffer(buf, json ? "\\u%04X" : "\\x%02X", c);
		else if (c < 0x80)
			appendPQExpBufferChar(buf, (char) c);
		else if ((n = utf8_len(p + i, len - i)) == 0)
		{
			if (json)
				appendPQExpBufferStr(buf, "\\uFFFD");
			else
				appendPQExpBuffer(buf, "\\x%02X", c);
		}
		else
		{
			pg_wchar	cp = utf8_to_unicode(p + i);

			if (unsafe_code_point(cp))
				appendPQExpBuffer(buf, "\\u%04X", (unsigned int) cp);
			else
				appendBinaryPQExpBuffer(buf, s + i, n);
			i += n;
			continue;
		}
		i++;
	}
}

/* s[0..len-1] escaped for a person's terminal or a log (append_safe()) */
void
append_escaped(PQExpBuffer buf, const char *s, size_t len)
{
	append_safe(buf, s, len, false);
}

/* is s[0..len-1] valid UTF-8, without NUL bytes? */
bool
is_valid_utf8(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *) s;
	size_t		i = 0;

	while (i < len)
	{
		int			n = p[i] == 0 ? 0 : utf8_len(p + i, len - i);

		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/*
 * A copy of s[0..len-1] that is valid UTF-8 without NUL bytes: bytes that
 * are not are replaced by '?'.  For what a child process printed, which
 * goes to the server as text.
 */
char *
valid_utf8(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *) s;
	char	   *out = pg_malloc(len + 1);
	size_t		i = 0;
	size_t		o = 0;

	while (i < len)
	{
		int			n = p[i] == 0 ? 0 : utf8_len(p + i, len - i);

		if (n == 0)
		{
			out[o++] = '?';
			i++;
			continue;
		}
		memcpy(out + o, s + i, n);
		o += n;
		i += n;
	}
	out[o] = '\0';
	return out;
}

/* the next buffer of a ring of ESC_RING, emptied */
static PQExpBuffer
ring_buffer(void)
{
	static PQExpBuffer ring[ESC_RING];
	static int	next = 0;
	PQExpBuffer buf;

	if (ring[next] == NULL)
		ring[next] = createPQExpBuffer();
	buf = ring[next];
	next = (next + 1) % ESC_RING;
	resetPQExpBuffer(buf);
	return buf;
}

/*
 * s escaped, as append_escaped() does it, in a buffer of a ring: the
 * result stays valid for the next ESC_RING - 1 calls, enough for the
 * arguments of one printf().  NULL gives "".
 */
const char *
cli_esc(const char *s)
{
	PQExpBuffer buf = ring_buffer();

	if (s != NULL)
		append_escaped(buf, s, strlen(s));
	if (PQExpBufferBroken(buf))
		pg_fatal("out of memory");
	return buf->data;
}

/*
 * A JSON text (as the server writes it) that is still the same JSON, with
 * what could act on a terminal written as \uHHHH escapes.  The server
 * escapes the C0 controls inside strings, not DEL nor the code points of
 * unsafe_code_point(); outside strings valid JSON has only whitespace
 * among these, which is kept.  Invalid UTF-8 (which the server does not
 * send) becomes U+FFFD.  In a buffer of the ring, as cli_esc().
 */
const char *
cli_json_safe(const char *json)
{
	PQExpBuffer buf = ring_buffer();

	append_safe(buf, json, strlen(json), true);
	if (PQExpBufferBroken(buf))
		pg_fatal("out of memory");
	return buf->data;
}

/*
 * fmt formatted, then escaped as a whole: whatever the arguments hold,
 * the message is one line of printable text.  The caller frees it.
 */
static char *
escaped_message(const char *fmt, va_list ap)
{
	PQExpBufferData raw;
	PQExpBufferData out;
	size_t		size = 256;

	/* format into a buffer big enough: vsnprintf says how big */
	for (;;)
	{
		va_list		copy;
		int			needed;
		char	   *try = pg_malloc(size);

		va_copy(copy, ap);
		needed = vsnprintf(try, size, fmt, copy);
		va_end(copy);
		if (needed >= 0 && (size_t) needed < size)
		{
			initPQExpBuffer(&raw);
			appendBinaryPQExpBuffer(&raw, try, needed);
			pg_free(try);
			break;
		}
		pg_free(try);
		size = needed >= 0 ? (size_t) needed + 1 : size * 2;
	}
	initPQExpBuffer(&out);
	append_escaped(&out, raw.data, raw.len);
	termPQExpBuffer(&raw);
	if (PQExpBufferDataBroken(out))
		pg_fatal("out of memory");
	return out.data;
}

/*
 * An error or a warning on stderr, through PostgreSQL's frontend logging
 * ("jobq: error: ..."), escaped.
 */
void
cli_log(enum pg_log_level level, const char *fmt,...)
{
	va_list		ap;
	char	   *msg;

	va_start(ap, fmt);
	msg = escaped_message(fmt, ap);
	va_end(ap);
	pg_log_generic(level, PG_LOG_PRIMARY, "%s", msg);
	free(msg);
}

/* an error, then exit with status */
void
cli_fatal(int status, const char *fmt,...)
{
	va_list		ap;
	char	   *msg;

	va_start(ap, fmt);
	msg = escaped_message(fmt, ap);
	va_end(ap);
	pg_log_generic(PG_LOG_ERROR, PG_LOG_PRIMARY, "%s", msg);
	free(msg);
	exit(status);
}
