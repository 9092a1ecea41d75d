/*-------------------------------------------------------------------------
 *
 * work_lease.c
 *		jobq work: the connections, the claims and the lease calls.
 *
 * Two connections: one blocks in jobq.claim(wait => ...) until a job is
 * committed (so an idle executor starts a job as soon as it exists, with
 * no polling), the other carries heartbeats and outcomes.  A lost
 * connection is made again with a growing delay; outcomes not yet
 * delivered are kept and delivered then, and count only if the lease
 * still holds (jobq.complete() says so).
 *
 * No statement sets anything for the session: through a pooler in
 * transaction mode a session setting would stay on the server connection
 * and reach other clients.  Each statement is bounded by the client
 * instead (cli_exec_bounded(), and the claim's deadline); the lease calls
 * wait for a lock at most lock_timeout, 500 ms when it is 0, on the
 * server's side.  The claim is one statement outside a transaction block:
 * its commit is the lease.
 *
 * IDENTIFICATION
 *		cli/work_lease.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <sys/wait.h>

#include "work.h"

PGconn	   *claim_conn;			/* blocks in jobq.claim() */
PGconn	   *ctl_conn;			/* heartbeats and outcomes */
bool		claim_in_flight = false;
double		claim_deadline = 0;	/* a claim not answered by then is cancelled */
static bool claim_cancelled = false;
double		reconnect_at = 0;	/* no connection nor claim before then */
static double reconnect_delay = 0.1;
bool		ran_one = false;	/* a job was claimed */
bool		claimed_none = false;	/* --once: a claim came back empty */

/*
 * names as a text[] literal, each element double-quoted and escaped, for
 * jobq.claim()'s task and queue lists
 */
static char *
pg_array(const char **names, int n)
{
	PQExpBufferData buf;
	int			i;

	initPQExpBuffer(&buf);
	appendPQExpBufferChar(&buf, '{');
	for (i = 0; i < n; i++)
	{
		const char *p;

		if (i > 0)
			appendPQExpBufferChar(&buf, ',');
		appendPQExpBufferChar(&buf, '"');
		for (p = names[i]; *p; p++)
		{
			if (*p == '"' || *p == '\\')
				appendPQExpBufferChar(&buf, '\\');
			appendPQExpBufferChar(&buf, *p);
		}
		appendPQExpBufferChar(&buf, '"');
	}
	appendPQExpBufferChar(&buf, '}');
	if (PQExpBufferDataBroken(buf))
		pg_fatal("out of memory");
	return buf.data;
}

void
close_conn(PGconn **conn)
{
	if (*conn)
		PQfinish(*conn);
	*conn = NULL;
	if (conn == &claim_conn)
		claim_in_flight = false;
}

/* both connections, made again after a delay that grows while they fail */
bool
ensure_connected(void)
{
	double		now = now_seconds();
	char		appname[128];

	if (claim_conn && PQstatus(claim_conn) != CONNECTION_OK)
		close_conn(&claim_conn);
	if (ctl_conn && PQstatus(ctl_conn) != CONNECTION_OK)
		close_conn(&ctl_conn);
	if (claim_conn && ctl_conn)
		return true;
	if (now < reconnect_at)
		return false;
	snprintf(appname, sizeof(appname), "jobq work %s", exec_name);
	if (ctl_conn == NULL)
		ctl_conn = cli_connect(&conn_opts, appname, true);
	if (ctl_conn && claim_conn == NULL)
		claim_conn = cli_connect(&conn_opts, appname, true);
	if (claim_conn && ctl_conn)
	{
		if (reconnect_delay > 0.1)
			logmsg("connected again");
		reconnect_delay = 0.1;
		return true;
	}
	logmsg("cannot connect; trying again in %.1f s", reconnect_delay);
	reconnect_at = now + reconnect_delay;
	reconnect_delay = reconnect_delay * 2 > 10 ? 10 : reconnect_delay * 2;
	return false;
}

/* the claim, sent without waiting for its result */
void
send_claim(int n, double wait_s)
{
	char		ntext[16];
	char		lease[32];
	char		wait[32];
	char		pid[16];
	const char **names = pg_malloc_array(const char *, ntasks);
	char	   *task_array;
	char	   *queue_array = NULL;
	const char *params[8];
	int			i;

	for (i = 0; i < ntasks; i++)
		names[i] = tasks[i].name;
	task_array = pg_array(names, ntasks);
	if (nqueues > 0)
		queue_array = pg_array(queues, nqueues);
	snprintf(ntext, sizeof(ntext), "%d", n);
	snprintf(lease, sizeof(lease), "%.3f", lease_s);
	snprintf(wait, sizeof(wait), "%.3f", wait_s);
	snprintf(pid, sizeof(pid), "%d", (int) getpid());
	params[0] = task_array;
	params[1] = queue_array;
	params[2] = ntext;
	params[3] = lease;
	params[4] = exec_name;
	params[5] = wait;
	params[6] = hostname;
	params[7] = pid;
	if (!PQsendQueryParams(claim_conn,
						   "SELECT id, token, task, payload::text, queue, priority, attempt,"
						   "       max_attempts, COALESCE(EXTRACT(epoch FROM timeout), 0),"
						   "       run_at, owner::text"
						   "  FROM (SELECT c.*, c.lease_token::text AS token"
						   "          FROM jobq.claim($1::text[], $2::text[], $3::integer,"
						   "                          pg_catalog.make_interval(secs => $4::float8), $5,"
						   "                          pg_catalog.make_interval(secs => $6::float8),"
						   "                          $7, $8::integer) c) s",
						   8, NULL, params, NULL, NULL, 0))
	{
		logmsg("cannot send a claim: %s", cli_result_message(NULL, claim_conn));
		close_conn(&claim_conn);
	}
	else
	{
		claim_in_flight = true;
		claim_cancelled = false;
		claim_deadline = now_seconds() + wait_s + CLAIM_SLACK_S;
	}
	free(names);
	free(task_array);
	free(queue_array);
}

/* the rows of a claim's result: jobs to start (or to hand back) */
static void
take_claimed(PGresult *res)
{
	int			r;

	for (r = 0; r < PQntuples(res); r++)
	{
		Job		   *j = NULL;
		int			i;

		for (i = 0; i < concurrency; i++)
			if (!jobs[i].used)
			{
				j = &jobs[i];
				break;
			}
		if (j == NULL)
		{
			/* more than asked for cannot happen; keep it safe anyway */
			logmsg("no room for claimed job %s", PQgetvalue(res, r, 0));
			continue;
		}
		free_job(j);
		j->used = true;
		snprintf(j->id, sizeof(j->id), "%s", PQgetvalue(res, r, 0));
		snprintf(j->token, sizeof(j->token), "%s", PQgetvalue(res, r, 1));
		j->task = pg_strdup(PQgetvalue(res, r, 2));
		j->payload = pg_strdup(PQgetvalue(res, r, 3));
		j->queue = pg_strdup(PQgetvalue(res, r, 4));
		snprintf(j->priority, sizeof(j->priority), "%s", PQgetvalue(res, r, 5));
		snprintf(j->attempt, sizeof(j->attempt), "%s", PQgetvalue(res, r, 6));
		snprintf(j->max_attempts, sizeof(j->max_attempts), "%s", PQgetvalue(res, r, 7));
		j->timeout_s = atof(PQgetvalue(res, r, 8));
		j->run_at = pg_strdup(PQgetvalue(res, r, 9));
		j->owner = pg_strdup(PQgetvalue(res, r, 10));
		ran_one = true;
		if (stop_signals > 0)
		{
			j->outcome = OUT_RELEASE;
			continue;
		}
		if (!start_job(j))
			reconnect_at = now_seconds() + 1;	/* not at once into the same failure */
	}
}

/* a statement on the control connection; NULL if the connection failed */
static PGresult *
ctl_exec(const char *sql, int n, const char *const *params)
{
	PGresult   *res;

	if (ctl_conn == NULL)
		return NULL;
	res = cli_exec_bounded(ctl_conn, sql, n, params, CTL_TIMEOUT_MS);
	if (res == NULL || PQstatus(ctl_conn) != CONNECTION_OK)
	{
		PQclear(res);
		close_conn(&ctl_conn);
		return NULL;
	}
	return res;
}

/*
 * An error worth trying again: the connection, a lock held elsewhere
 * (55P03: the lease calls wait at most lock_timeout, 500 ms when it is 0),
 * a deadlock or serialization failure, a lack of resources, a shutdown,
 * a statement cancelled (57014: past CTL_TIMEOUT_MS, cli_exec_bounded()).
 */
static bool
transient(const PGresult *res)
{
	const char *st = cli_sqlstate(res);

	return strncmp(st, "08", 2) == 0 || strncmp(st, "40", 2) == 0 ||
		strncmp(st, "53", 2) == 0 || strncmp(st, "57P", 3) == 0 ||
		strcmp(st, "55P03") == 0 || strcmp(st, "57014") == 0;
}

/*
 * A lease call's result, if it is to count: NULL (and res cleared) when
 * the call must be made again later (no connection, a transient error).
 */
static PGresult *
settled(PGresult *res)
{
	if (res != NULL && PQresultStatus(res) != PGRES_TUPLES_OK && transient(res))
	{
		PQclear(res);
		return NULL;
	}
	return res;
}

/* hand the job back, its attempt not counted (jobq.release()) */
static bool
deliver_release(Job *j, const char **params)
{
	PGresult   *res = settled(ctl_exec("SELECT jobq.release($1::bigint, $2::uuid)", 2, params));

	if (res == NULL)
		return false;
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		logmsg("handed job %s back", j->id);
	else
		logmsg("could not hand job %s back: %s", j->id, cli_result_message(res, ctl_conn));
	PQclear(res);
	return true;
}

/*
 * complete the job with what its process printed: as JSON if it is JSON,
 * else as {"stdout": "..."} (jobq.complete())
 */
static bool
deliver_complete(Job *j, const char **params, double took)
{
	char	   *result = valid_utf8(j->out ? j->out : "", j->out_len);
	PGresult   *res;

	params[2] = result[0] ? result : NULL;
	res = ctl_exec("SELECT jobq.complete($1::bigint, $2::uuid, $3::jsonb)", 3, params);
	if (res && PQresultStatus(res) != PGRES_TUPLES_OK &&
		strncmp(cli_sqlstate(res), "22", 2) == 0)
	{
		PQclear(res);
		res = ctl_exec("SELECT jobq.complete($1::bigint, $2::uuid,"
					   " pg_catalog.jsonb_build_object('stdout', $3::text))", 3, params);
	}
	pg_free(result);
	if ((res = settled(res)) == NULL)
		return false;
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		logmsg("completed job %s in %.2f s%s", j->id, took,
			   j->out_truncated ? " (output truncated)" : "");
	else
		logmsg("job %s finished, but its result does not count: %s", j->id,
			   cli_result_message(res, ctl_conn));
	PQclear(res);
	return true;
}

/* why the attempt failed, then the tail of stderr: the job's error */
static char *
fail_message(const Job *j)
{
	PQExpBufferData msg;

	initPQExpBuffer(&msg);
	if (j->timed_out)
		appendPQExpBuffer(&msg, "timed out after %g s", j->timeout_s);
	else if (WIFEXITED(j->wstatus))
		appendPQExpBuffer(&msg, "exit status %d", WEXITSTATUS(j->wstatus));
	else if (WIFSIGNALED(j->wstatus))
		appendPQExpBuffer(&msg, "killed by signal %d", WTERMSIG(j->wstatus));
	else
		appendPQExpBufferStr(&msg, "ended");
	if (!j->timed_out)
	{
		char	   *tail = stderr_tail(j);

		if (tail[0])
			appendPQExpBuffer(&msg, ": %s", tail);
		pg_free(tail);
	}
	if (PQExpBufferDataBroken(msg))
		pg_fatal("out of memory");
	return msg.data;
}

/* fail the attempt (jobq.fail()): retried, or failed for good */
static bool
deliver_fail(Job *j, const char **params, double took)
{
	char	   *error = fail_message(j);
	PGresult   *res;

	params[2] = error;
	res = settled(ctl_exec("SELECT jobq.fail($1::bigint, $2::uuid, $3)", 3, params));
	if (res == NULL)
	{
		pg_free(error);
		return false;
	}
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		logmsg("failed job %s in %.2f s (%s): %.200s", j->id, took,
			   strcmp(PQgetvalue(res, 0, 0), "failed") == 0 ?
			   "no attempt left" : "will retry", error);
	else
		logmsg("job %s failed, but its outcome does not count: %s", j->id,
			   cli_result_message(res, ctl_conn));
	PQclear(res);
	pg_free(error);
	return true;
}

/*
 * Report a decided outcome; false if it must wait (for a connection, or
 * a transient error).  The job's slot is free afterwards.
 */
bool
deliver(Job *j)
{
	const char *params[3];
	double		took = now_seconds() - j->started;
	bool		done = true;

	params[0] = j->id;
	params[1] = j->token;
	switch (j->outcome)
	{
		case OUT_NONE:
			return false;
		case OUT_DROP:
			break;
		case OUT_RELEASE:
			done = deliver_release(j, params);
			break;
		case OUT_COMPLETE:
			done = deliver_complete(j, params, took);
			break;
		case OUT_FAIL:
			done = deliver_fail(j, params, took);
			break;
	}
	if (done)
		free_job(j);
	return done;
}

/* heartbeats due: extend leases; a cancelled or lost job is stopped */
void
heartbeats(double now)
{
	int			i;
	char		extend[32];

	snprintf(extend, sizeof(extend), "%.3f", lease_s);
	for (i = 0; i < concurrency; i++)
	{
		Job		   *j = &jobs[i];
		const char *params[3];
		PGresult   *res;

		if (!j->used || j->pid <= 0 || j->exited || j->outcome != OUT_NONE ||
			j->cancelled || j->lost || now < j->next_heartbeat)
			continue;
		params[0] = j->id;
		params[1] = j->token;
		params[2] = extend;
		res = ctl_exec("SELECT jobq.heartbeat($1::bigint, $2::uuid,"
					   " pg_catalog.make_interval(secs => $3::float8))", 3, params);
		if (res == NULL)
			return;				/* the connection is gone; retried later */
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
		{
			if (strcmp(PQgetvalue(res, 0, 0), "t") == 0)
			{
				logmsg("job %s was cancelled; stopping it", j->id);
				j->cancelled = true;
				stop_process(j);
			}
		}
		else if (strcmp(cli_sqlstate(res), "JQ001") == 0)
		{
			logmsg("lost the lease of job %s; stopping it: %s", j->id,
				   cli_result_message(res, ctl_conn));
			j->lost = true;
			stop_process(j);
		}
		else
			logmsg("heartbeat of job %s failed: %s", j->id, cli_result_message(res, ctl_conn));
		PQclear(res);
		j->next_heartbeat = now + lease_s / 3;
	}
}

/*
 * A claim that runs past its wait (a server that stopped answering, a
 * lock held elsewhere): cancelled, then, if even that is not answered,
 * given up with its connection.
 */
void
watch_claim(double now)
{
	if (!claim_in_flight || claim_conn == NULL || now < claim_deadline)
		return;
	if (!claim_cancelled)
	{
		logmsg("the claim runs past its wait; cancelling it");
		cli_cancel(claim_conn);
		claim_cancelled = true;
		claim_deadline = now + CANCEL_WAIT_MS / 1000.0;
	}
	else
	{
		logmsg("the claim did not end when cancelled; connecting again");
		close_conn(&claim_conn);
	}
}

/*
 * A claim's failure.  No privilege, no such function, an argument the
 * server does not take: the same claim would fail the same way forever,
 * so the executor stops.  Otherwise it claims again after a second (not
 * at full speed into the same error).  A claim cancelled by the stop is
 * no failure.
 */
static bool
claim_failed(const PGresult *res)
{
	const char *st = cli_sqlstate(res);

	if (strncmp(st, "42", 2) == 0 || strncmp(st, "22", 2) == 0)
	{
		logmsg("claim failed: %s; stopping", cli_result_message(res, claim_conn));
		exit_status = EXIT_ERROR;
		stop_signals = 2;
		return true;
	}
	if (strcmp(st, "57014") == 0 && stop_signals > 0)
		return false;
	logmsg("claim failed: %s", cli_result_message(res, claim_conn));
	reconnect_at = now_seconds() + 1;
	return true;
}

/* the claim's result, if it has come: the jobs it took, or its error */
void
claim_result(void)
{
	PGresult   *res;
	int			got = 0;
	bool		failed = false;

	if (!claim_in_flight || claim_conn == NULL)
		return;
	if (!PQconsumeInput(claim_conn))
	{
		logmsg("lost the connection: %s", cli_result_message(NULL, claim_conn));
		close_conn(&claim_conn);
		return;
	}
	if (PQisBusy(claim_conn))
		return;
	while ((res = PQgetResult(claim_conn)) != NULL)
	{
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
		{
			got += PQntuples(res);
			take_claimed(res);
		}
		else if (claim_failed(res))
			failed = true;
		PQclear(res);
	}
	claim_in_flight = false;
	/* --once: a claim that failed is tried again, not "no job" */
	if (once && got == 0 && !failed)
		claimed_none = true;
	if (PQstatus(claim_conn) != CONNECTION_OK)
		close_conn(&claim_conn);
}
