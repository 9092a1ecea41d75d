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

int
cmd_job(const char *verb, int argc, char **argv)
{
	static struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"json", no_argument, NULL, 'j'},
		{"timeout", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 1000},
		{NULL, 0, NULL, 0}
	};
	ConnOpts	conn_opts = {0};
	bool		json = false;
	char		timeout[64];
	bool		have_timeout = false;
	const char *id;
	long		idv;
	const char *params[2];
	char		sql[512];
	PGconn	   *conn;
	PGresult   *res;
	int			c;
	int			status = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, CONN_SHORT_OPTIONS "jt:", long_options, NULL)) != -1)
	{
		if (conn_option(&conn_opts, c, optarg))
			continue;
		switch (c)
		{
			case 'j':
				json = true;
				break;
			case 't':
				{
					double		d;

					if (strcmp(verb, "wait") != 0)
						cli_fatal(EXIT_USAGE, "--timeout goes with wait");
					if (!parse_duration(optarg, &d))
						cli_fatal(EXIT_USAGE, "invalid timeout \"%s\": give seconds, or a number with ms, s, m or h", optarg);
					snprintf(timeout, sizeof(timeout), "%.6f", d);
					have_timeout = true;
					break;
				}
			case 1000:
				usage(verb, stdout);
				return EXIT_OK;
			default:
				pg_log_error_hint("Try \"jobq %s --help\" for more information.", verb);
				return EXIT_USAGE;
		}
	}
	if (optind != argc - 1)
		cli_fatal(EXIT_USAGE, "%s takes one job id; try \"jobq %s --help\"", verb, verb);
	id = argv[optind];
	if (!parse_int(id, 1, 0x7fffffffffffffffL, &idv))
		cli_fatal(EXIT_USAGE, "invalid job id \"%s\"", id);
	params[0] = id;
	params[1] = have_timeout ? timeout : NULL;

	conn = cli_connect(&conn_opts, "jobq", false);

	/* the action, then the job as it is after it */
	if (strcmp(verb, "cancel") == 0 || strcmp(verb, "retry") == 0)
	{
		snprintf(sql, sizeof(sql), "SELECT jobq.%s($1::bigint)", verb);
		res = cli_exec(conn, sql, 1, params);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			cli_error("%s", cli_result_message(res, conn));
			PQclear(res);
			PQfinish(conn);
			return EXIT_ERROR;
		}
		if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
		{
			/* not an error: the job is as it was; say why on stderr */
			cli_error(strcmp(verb, "cancel") == 0 ?
					  "job %s was not cancelled: it had already finished" :
					  "job %s was not retried: only failed or cancelled jobs are", id);
			status = EXIT_ERROR;
		}
		PQclear(res);
	}

	if (strcmp(verb, "wait") == 0)
		snprintf(sql, sizeof(sql), "%s FROM jobq.wait($1::bigint, pg_catalog.make_interval(secs => $2::float8)) s",
				 json ? "SELECT pg_catalog.row_to_json(s)" : "SELECT s.*");
	else
		snprintf(sql, sizeof(sql), "%s FROM jobq.status($1::bigint) s",
				 json ? "SELECT pg_catalog.row_to_json(s)" : "SELECT s.*");
	res = cli_exec(conn, sql, strcmp(verb, "wait") == 0 ? 2 : 1, params);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		cli_error("%s", cli_result_message(res, conn));
		PQclear(res);
		PQfinish(conn);
		return EXIT_ERROR;
	}
	if (json)
		printf("%s\n", cli_json_safe(PQgetvalue(res, 0, 0)));
	else
		print_job(res);

	/* wait: did it finish? */
	if (strcmp(verb, "wait") == 0)
	{
		PGresult   *st = cli_exec(conn,
								  "SELECT state IN ('succeeded', 'failed', 'cancelled') FROM jobq.status($1::bigint)",
								  1, params);

		if (PQresultStatus(st) == PGRES_TUPLES_OK && PQntuples(st) == 1 &&
			strcmp(PQgetvalue(st, 0, 0), "t") != 0)
		{
			cli_error("job %s did not finish within the timeout", id);
			status = EXIT_ERROR;
		}
		PQclear(st);
	}
	PQclear(res);
	PQfinish(conn);
	return status;
}
