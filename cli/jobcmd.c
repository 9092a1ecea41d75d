/*-------------------------------------------------------------------------
 *
 * jobcmd.c
 *		jobq status|wait|cancel|retry ID: act on one job and print it.
 *
 * The job is printed as jobq.status() returns it, one "field: value" line
 * per set field, or as one JSON object with --json.  wait exits 1 if the
 * job did not finish within --timeout.
 *
 * IDENTIFICATION
 *		cli/jobcmd.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "getopt_long.h"

#include "jobq_cli.h"

static void
usage(const char *verb, FILE *out)
{
	fprintf(out,
			"Usage:\n"
			"  jobq %s ID [--json]%s\n"
			"\n"
			"%s\n"
			"\n"
			"Options:\n"
			"  --json                    print the job as one JSON object\n"
			"%s"
			"  -d, -h, -p, -U, -w, -W    connection options, as psql's\n",
			verb, strcmp(verb, "wait") == 0 ? " [--timeout D]" : "",
			strcmp(verb, "status") == 0 ? "Print a job's state, attempts, times, result and last error." :
			strcmp(verb, "wait") == 0 ? "Wait until a job has finished, then print it; exit status 1 if it did not\nfinish within the timeout." :
			strcmp(verb, "cancel") == 0 ? "Cancel a job (a running one is interrupted), then print it." :
			"Run a failed or cancelled job again, then print it.",
			strcmp(verb, "wait") == 0 ? "  --timeout=D               give up after D (as 30s, 5m; default: no limit)\n" : "");
}

/*
 * print the one-row result of jobq.status() as field: value lines, each
 * value escaped: a result, an error or a queue name is anyone's text
 */
static void
print_job(PGresult *res)
{
	int			i;

	for (i = 0; i < PQnfields(res); i++)
		if (!PQgetisnull(res, 0, i))
			printf("%-14s %s\n", cli_esc(PQfname(res, i)), cli_esc(PQgetvalue(res, 0, i)));
}

/* what to do, as the command line says it */
typedef struct JobArgs
{
	ConnOpts	conn_opts;
	const char *verb;			/* status, wait, cancel or retry */
	const char *id;
	bool		json;
	char		timeout[64];	/* wait --timeout, "" if none */
} JobArgs;

/* the command line into args; exit with a message on an error */
static void
job_options(int argc, char **argv, JobArgs *args)
{
	static struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"json", no_argument, NULL, 'j'},
		{"timeout", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 1000},
		{NULL, 0, NULL, 0}
	};
	const char *verb = args->verb;
	long		idv;
	double		d;
	int			c;

	optind = 1;
	while ((c = getopt_long(argc, argv, CONN_SHORT_OPTIONS "jt:", long_options, NULL)) != -1)
	{
		if (conn_option(&args->conn_opts, c, optarg))
			continue;
		switch (c)
		{
			case 'j':
				args->json = true;
				break;
			case 't':
				if (strcmp(verb, "wait") != 0)
					cli_fatal(EXIT_USAGE, "--timeout goes with wait");
				if (!parse_duration(optarg, &d))
					cli_fatal(EXIT_USAGE, "invalid timeout \"%s\": give seconds, or a number with ms, s, m or h", optarg);
				snprintf(args->timeout, sizeof(args->timeout), "%.6f", d);
				break;
			case 1000:
				usage(verb, stdout);
				exit(EXIT_OK);
			default:
				pg_log_error_hint("Try \"jobq %s --help\" for more information.", verb);
				exit(EXIT_USAGE);
		}
	}
	if (optind != argc - 1)
		cli_fatal(EXIT_USAGE, "%s takes one job id; try \"jobq %s --help\"", verb, verb);
	args->id = argv[optind];
	if (!parse_int(args->id, 1, 0x7fffffffffffffffL, &idv))
		cli_fatal(EXIT_USAGE, "invalid job id \"%s\"", args->id);
}

/*
 * cancel or retry: the action; false if it failed or did nothing (then
 * said why on stderr: the job is as it was)
 */
static bool
act_on_job(PGconn *conn, const JobArgs *args)
{
	const char *params[1] = {args->id};
	char		sql[128];
	PGresult   *res;
	bool		ok = true;

	snprintf(sql, sizeof(sql), "SELECT jobq.%s($1::bigint)", args->verb);
	res = cli_exec(conn, sql, 1, params);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		cli_error("%s", cli_result_message(res, conn));
		PQclear(res);
		PQfinish(conn);
		exit(EXIT_ERROR);
	}
	if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
	{
		cli_error(strcmp(args->verb, "cancel") == 0 ?
				  "job %s was not cancelled: it had already finished" :
				  "job %s was not retried: only failed or cancelled jobs are", args->id);
		ok = false;
	}
	PQclear(res);
	return ok;
}

/* print the job (after waiting for it with wait); false on an error */
static bool
show_job(PGconn *conn, const JobArgs *args)
{
	const char *params[2] = {args->id, args->timeout[0] ? args->timeout : NULL};
	bool		wait = strcmp(args->verb, "wait") == 0;
	char		sql[512];
	PGresult   *res;

	snprintf(sql, sizeof(sql), "%s FROM %s s",
			 args->json ? "SELECT pg_catalog.row_to_json(s)" : "SELECT s.*",
			 wait ? "jobq.wait($1::bigint, pg_catalog.make_interval(secs => $2::float8))" :
			 "jobq.status($1::bigint)");
	res = cli_exec(conn, sql, wait ? 2 : 1, params);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		cli_error("%s", cli_result_message(res, conn));
		PQclear(res);
		return false;
	}
	if (args->json)
		printf("%s\n", cli_json_safe(PQgetvalue(res, 0, 0)));
	else
		print_job(res);
	PQclear(res);
	return true;
}

/* wait: has the job finished?  Says so on stderr if not */
static bool
job_finished(PGconn *conn, const JobArgs *args)
{
	const char *params[1] = {args->id};
	PGresult   *res = cli_exec(conn,
							   "SELECT state IN ('succeeded', 'failed', 'cancelled') FROM jobq.status($1::bigint)",
							   1, params);
	bool		finished = true;

	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
		strcmp(PQgetvalue(res, 0, 0), "t") != 0)
	{
		cli_error("job %s did not finish within the timeout", args->id);
		finished = false;
	}
	PQclear(res);
	return finished;
}

int
cmd_job(const char *verb, int argc, char **argv)
{
	JobArgs		args = {0};
	PGconn	   *conn;
	int			status = EXIT_OK;

	args.verb = verb;
	job_options(argc, argv, &args);
	conn = cli_connect(&args.conn_opts, "jobq", false);

	/* the action, then the job as it is after it */
	if ((strcmp(verb, "cancel") == 0 || strcmp(verb, "retry") == 0) &&
		!act_on_job(conn, &args))
		status = EXIT_ERROR;
	if (!show_job(conn, &args))
		status = EXIT_ERROR;
	else if (strcmp(verb, "wait") == 0 && !job_finished(conn, &args))
		status = EXIT_ERROR;
	PQfinish(conn);
	return status;
}
