/*-------------------------------------------------------------------------
 *
 * jobq_cli.h
 *		Declarations shared by the files of the jobq command.
 *
 * main.c reads the subcommand and dispatches; conn.c connects (psql's
 * conventions: -d, -h, -p, -U, the libpq environment variables and
 * ~/.pgpass); output.c escapes what is shown to a person and reports
 * errors; enqueue.c, jobcmd.c (status, wait, cancel, retry), work.c (the
 * executor) and top.c are the subcommands.  Every file includes
 * postgres_fe.h first, as PostgreSQL's client programs do.
 *
 * IDENTIFICATION
 *		cli/jobq_cli.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_CLI_H
#define JOBQ_CLI_H

#include "libpq-fe.h"
#include "pqexpbuffer.h"
#include "common/logging.h"
#include "fe_utils/connect_utils.h"

#define JOBQ_CLI_VERSION	"0.5.0"

/* exit statuses */
#define EXIT_OK			0
#define EXIT_ERROR		1		/* an error: bad arguments, the server's */
#define EXIT_USAGE		2		/* bad command line */
#define EXIT_NOTHING	3		/* nothing to do: work --once found no job */

/* how long a cancelled statement may take to end (cli_exec_bounded()) */
#define CANCEL_WAIT_MS	5000

/* where to connect, as psql takes it */
typedef struct ConnOpts
{
	const char *dbname;			/* -d: a database name or a conninfo */
	const char *host;
	const char *port;
	const char *user;
	enum trivalue prompt_password;	/* -W: TRI_YES, -w: TRI_NO */
	char	   *password;		/* as typed at the prompt, for reconnecting */
} ConnOpts;

/* getopt_long entries of the connection options, and their handling */
#define CONN_LONG_OPTIONS \
	{"dbname", required_argument, NULL, 'd'}, \
	{"host", required_argument, NULL, 'h'}, \
	{"port", required_argument, NULL, 'p'}, \
	{"username", required_argument, NULL, 'U'}, \
	{"no-password", no_argument, NULL, 'w'}, \
	{"password", no_argument, NULL, 'W'}
#define CONN_SHORT_OPTIONS "d:h:p:U:wW"

/* the connection options in each command's --help */
#define CONN_HELP \
	"  -d, --dbname=DBNAME|CONNINFO  database, or a connection string\n" \
	"  -h, --host=HOST               server host or socket directory\n" \
	"  -p, --port=PORT               server port\n" \
	"  -U, --username=USER           role to connect as\n" \
	"  -w, --no-password             never prompt for a password\n" \
	"  -W, --password                prompt for a password before connecting\n"

/* conn.c */
extern bool conn_option(ConnOpts *opts, int c, const char *arg);
extern PGconn *cli_connect(ConnOpts *opts, const char *appname,
						   bool quiet);
extern const char *cli_result_message(const PGresult *res, const PGconn *conn);
extern const char *cli_sqlstate(const PGresult *res);
extern PGresult *cli_exec(PGconn *conn, const char *sql, int nparams,
						  const char *const *params);
extern PGresult *cli_exec_bounded(PGconn *conn, const char *sql, int nparams,
								  const char *const *params, int timeout_ms);
extern void cli_cancel(PGconn *conn);
extern bool parse_duration(const char *s, double *seconds);
extern bool parse_int(const char *s, long min, long max, long *out);
extern double now_seconds(void);
extern char *read_file(const char *path, size_t limit, size_t *len);

/* output.c */
extern void append_escaped(PQExpBuffer buf, const char *s, size_t len);
extern const char *cli_esc(const char *s);
extern const char *cli_json_safe(const char *json);
extern char *valid_utf8(const char *s, size_t len);
extern bool is_valid_utf8(const char *s, size_t len);
extern void cli_log(enum pg_log_level level, const char *fmt,...) pg_attribute_printf(2, 3);
extern void cli_fatal(int status, const char *fmt,...) pg_attribute_printf(2, 3) pg_attribute_noreturn();

/* errors and warnings, escaped: "jobq: error: ..." on stderr */
#define cli_error(...)		cli_log(PG_LOG_ERROR, __VA_ARGS__)
#define cli_warning(...)	cli_log(PG_LOG_WARNING, __VA_ARGS__)

/* the subcommands */
extern int	cmd_enqueue(int argc, char **argv);
extern int	cmd_job(const char *verb, int argc, char **argv);
extern int	cmd_work(int argc, char **argv);
extern int	cmd_top(int argc, char **argv);

#endif							/* JOBQ_CLI_H */
