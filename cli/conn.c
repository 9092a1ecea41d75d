/*-------------------------------------------------------------------------
 *
 * conn.c
 *		Connecting and running statements, for every subcommand of the
 *		jobq command; and the small parsers they share.
 *
 * Connection options follow psql: -d takes a database name or a whole
 * conninfo string, -h, -p and -U override parts of it, -W and -w say
 * whether to ask for a password, and everything else comes from libpq
 * (PGHOST, PGDATABASE and the others, ~/.pgpass).  A server's error is
 * one line, its primary message, escaped (output.c reports it).
 *
 * IDENTIFICATION
 *		cli/conn.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <math.h>
#include <poll.h>
#include <sys/time.h>

#include "common/string.h"

#include "jobq_cli.h"

/* record a connection option; false if c is not one */
bool
conn_option(ConnOpts *opts, int c, const char *arg)
{
	switch (c)
	{
		case 'd':
			opts->dbname = arg;
			return true;
		case 'h':
			opts->host = arg;
			return true;
		case 'p':
			opts->port = arg;
			return true;
		case 'U':
			opts->user = arg;
			return true;
		case 'w':
			opts->prompt_password = TRI_NO;
			return true;
		case 'W':
			opts->prompt_password = TRI_YES;
			return true;
		default:
			return false;
	}
}

/* ask for the password on the terminal, as psql does */
static void
prompt_password(ConnOpts *opts)
{
	char	   *prompt;

	if (opts->user)
		prompt = psprintf("Password for user %s: ", opts->user);
	else
		prompt = pg_strdup("Password: ");
	opts->password = simple_prompt(prompt, false);
	pg_free(prompt);
}

/*
 * Connect; on failure, report it and exit, or with quiet return NULL
 * (the executor retries).  Passwords as psql: -W asks before connecting;
 * otherwise, if the server wants a password that libpq has none for
 * (PGPASSWORD, ~/.pgpass), it is asked for and the connection tried again,
 * unless -w says never to.  A password typed once is kept in opts for the
 * connections made later (the executor's reconnections, which are quiet
 * and never ask).
 */
PGconn *
cli_connect(ConnOpts *opts, const char *appname, bool quiet)
{
	const char *keys[16];
	const char *values[16];
	int			n;
	PGconn	   *conn;

	if (opts->prompt_password == TRI_YES && opts->password == NULL && !quiet)
		prompt_password(opts);

/* one connection keyword, unless its value is NULL */
#define PARAM(k, v) \
	do { if ((v) != NULL) { keys[n] = (k); values[n++] = (v); } } while (0)

	for (;;)
	{
		n = 0;
		PARAM("dbname", opts->dbname);
		PARAM("host", opts->host);
		PARAM("port", opts->port);
		PARAM("user", opts->user);
		PARAM("password", opts->password);
		PARAM("fallback_application_name", appname);
		/* what a child prints is sent as UTF-8 (valid_utf8()) */
		PARAM("client_encoding", "UTF8");
		/* a server out of reach is noticed, not waited for forever */
		if (getenv("PGCONNECT_TIMEOUT") == NULL)
			PARAM("connect_timeout", "10");
		PARAM("keepalives_idle", "30");
		/* unacknowledged data: the connection is given up after 30 s */
		PARAM("tcp_user_timeout", "30000");
		keys[n] = NULL;
		values[n] = NULL;

		/* expand_dbname: -d may be a conninfo string or URI */
		conn = PQconnectdbParams(keys, values, 1);
		if (conn == NULL)
			pg_fatal("out of memory");
		if (PQstatus(conn) == CONNECTION_OK)
			return conn;
		if (!quiet && PQconnectionNeedsPassword(conn) && opts->password == NULL &&
			opts->prompt_password != TRI_NO)
		{
			PQfinish(conn);
			prompt_password(opts);
			continue;
		}
		if (!quiet)
			cli_fatal(EXIT_ERROR, "could not connect: %s",
					  cli_result_message(NULL, conn));
		PQfinish(conn);
		return NULL;
	}
#undef PARAM
}

/*
 * The error of a result (or of the connection), on one line: the primary
 * message, without libpq's "ERROR:  " prefix and trailing newline, and
 * escaped (cli_esc(): the server's messages quote names and values that
 * anyone may have chosen).  Valid until the ring of cli_esc() turns.
 */
const char *
cli_result_message(const PGresult *res, const PGconn *conn)
{
	const char *msg = NULL;
	char	   *copy;
	size_t		len;
	const char *out;

	if (res)
		msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	if (msg == NULL && res)
		msg = PQresultErrorMessage(res);
	if ((msg == NULL || msg[0] == '\0') && conn)
		msg = PQerrorMessage(conn);
	if (msg == NULL || msg[0] == '\0')
		msg = "unknown error";
	/* libpq's messages go on with "\n\t" lines: one line, joined by spaces */
	copy = pg_malloc(strlen(msg) + 1);
	for (len = 0; *msg; msg++)
	{
		if (*msg == '\n' || *msg == '\r')
		{
			while (msg[1] == '\n' || msg[1] == '\r' || msg[1] == '\t')
				msg++;
			copy[len++] = ' ';
		}
		else
			copy[len++] = *msg;
	}
	while (len > 0 && copy[len - 1] == ' ')
		len--;
	copy[len] = '\0';
	out = cli_esc(copy);
	pg_free(copy);
	return out;
}

/* the SQLSTATE of a failed result, "" if none */
const char *
cli_sqlstate(const PGresult *res)
{
	const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	return s ? s : "";
}

/* run a statement with text parameters (NULL for SQL NULL) */
PGresult *
cli_exec(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	return PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
}

/*
 * Ask the server to cancel what conn runs now.  The request goes on a
 * connection of its own (a PgBouncer forwards it to the server connection
 * the statement runs on); whether it came in time shows in the result.
 */
void
cli_cancel(PGconn *conn)
{
	PGcancel   *cancel = PQgetCancel(conn);
	char		errbuf[256];

	if (cancel)
	{
		(void) PQcancel(cancel, errbuf, sizeof(errbuf));
		PQfreeCancel(cancel);
	}
}

/*
 * Run a statement, waiting for its result at most timeout_ms; then it is
 * cancelled, and its result is the server's answer to that (57014).  If
 * even that does not come within CANCEL_WAIT_MS, or the connection fails,
 * NULL: the caller gives the connection up, since it is in the middle of
 * a statement.
 *
 * The bound is the client's own on purpose: a statement_timeout set for
 * the session would stay on the server connection, and through a pooler
 * in transaction mode reach whichever client gets that connection next.
 */
PGresult *
cli_exec_bounded(PGconn *conn, const char *sql, int nparams,
				 const char *const *params, int timeout_ms)
{
	double		deadline = now_seconds() + timeout_ms / 1000.0;
	bool		cancelled = false;
	PGresult   *res;
	PGresult   *last = NULL;

	if (!PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0))
		return NULL;
	for (;;)
	{
		while (PQisBusy(conn))
		{
			double		left = deadline - now_seconds();
			struct pollfd pfd;

			if (left <= 0)
			{
				if (cancelled)
				{
					PQclear(last);
					return NULL;
				}
				cli_cancel(conn);
				cancelled = true;
				deadline = now_seconds() + CANCEL_WAIT_MS / 1000.0;
				continue;
			}
			pfd.fd = PQsocket(conn);
			pfd.events = POLLIN;
			pfd.revents = 0;
			if (poll(&pfd, 1, (int) (left * 1000) + 1) < 0 && errno != EINTR)
				break;
			if (!PQconsumeInput(conn))
			{
				PQclear(last);
				return NULL;
			}
		}
		res = PQgetResult(conn);
		if (res == NULL)
			break;
		PQclear(last);
		last = res;
	}
	return last;
}

/*
 * A duration: a number of seconds, optionally with a unit (ms, s, m, h),
 * as "30", "1.5s", "500ms", "5m".  Not negative, at most a week.
 */
bool
parse_duration(const char *s, double *seconds)
{
	char	   *end;
	double		v;
	double		unit = 1;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || isnan(v) || v < 0)
		return false;
	while (*end == ' ')
		end++;
	if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
		unit = 1;
	else if (strcmp(end, "ms") == 0)
		unit = 0.001;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		unit = 60;
	else if (strcmp(end, "h") == 0)
		unit = 3600;
	else
		return false;
	v *= unit;
	if (v > 7 * 24 * 3600)
		return false;
	*seconds = v;
	return true;
}

/* a whole number within [min, max] */
bool
parse_int(const char *s, long min, long max, long *out)
{
	char	   *end;
	long		v;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

double
now_seconds(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return tv.tv_sec + tv.tv_usec / 1e6;
}

/* a whole file, at most limit bytes, NUL-terminated; NULL on error */
char *
read_file(const char *path, size_t limit, size_t *len)
{
	FILE	   *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	char	   *buf;
	size_t		cap = 8192;
	size_t		n = 0;

	if (f == NULL)
		return NULL;
	buf = pg_malloc(cap + 1);
	for (;;)
	{
		size_t		r;

		if (n == cap)
		{
			if (cap >= limit)
			{
				free(buf);
				if (f != stdin)
					fclose(f);
				errno = EFBIG;
				return NULL;
			}
			cap *= 2;
			buf = pg_realloc(buf, cap + 1);
		}
		r = fread(buf + n, 1, cap - n, f);
		if (r == 0)
			break;
		n += r;
	}
	if (ferror(f))
	{
		free(buf);
		if (f != stdin)
			fclose(f);
		return NULL;
	}
	if (f != stdin)
		fclose(f);
	if (n > limit)
	{
		free(buf);
		errno = EFBIG;
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}
