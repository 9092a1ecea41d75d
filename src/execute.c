/*-------------------------------------------------------------------------
 *
 * execute.c
 *		Run one job as its owner, inside a subtransaction.
 *
 * Identity: the worker is connected as the bootstrap superuser; for the
 * job it switches with SetUserIdAndSecContext(owner,
 * SECURITY_LOCAL_USERID_CHANGE), the mechanism behind SECURITY DEFINER.
 * current_user is the owner, and SET ROLE, RESET ROLE and SET SESSION
 * AUTHORIZATION fail inside the job.  The owner must still exist and be
 * allowed to log in, and the owner's ALTER ROLE ... SET settings (search
 * path included) are applied for the job.
 *
 * Isolation between jobs: GUC changes are undone with AtEOXact_GUC at the
 * job's own nesting level; cursors, prepared statements, session advisory
 * locks, temporary tables and sequence caches are discarded after every
 * job, and a session that may hold more is not given to another owner
 * (session.c).  Deferred triggers are fired at the end of
 * the job, as its owner: nothing of the job runs at the commit of the
 * execution transaction, where the identity is the worker's.
 *
 * Errors: the job runs in a subtransaction of the execution transaction.
 * An error rolls the subtransaction back (and with it the job's effects,
 * its identity switch and its GUC changes) and is recorded as the job's
 * outcome; it never reaches the worker's own error handling.  The
 * statement timeout is armed by hand: in a background worker nothing arms
 * it for SPI.
 *
 * Memory: the job runs in job_context, reset by the caller after each job;
 * the outcome (result, error text) is copied into the caller's context.
 *
 * IDENTIFICATION
 *		src/execute.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_db_role_setting.h"
#include "commands/prepare.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "pgstat.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/hsearch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "requests.h"

/* when the job in hand passes its timeout (0: none), for the watchdog */
volatile TimestampTz jobq_job_deadline = 0;

/*
 * Role settings (ALTER ROLE ... SET) of the owners met in the current
 * execution transaction.  Looked up once per owner and transaction.
 */
#define ROLE_SETTINGS_CACHE 8

typedef struct RoleSettings
{
	Oid			owner;
	ArrayType  *all_databases;	/* ALTER ROLE r SET */
	ArrayType  *this_database;	/* ALTER ROLE r IN DATABASE d SET */
} RoleSettings;

static RoleSettings role_settings[ROLE_SETTINGS_CACHE];
static int	n_role_settings = 0;

/* ALTER DATABASE d SET, for every role; looked up once per transaction */
static ArrayType *database_settings = NULL;
static bool database_settings_valid = false;

/*
 * Forget cached role settings; called at the start of every execution
 * transaction (the cached arrays live in its memory context).
 */
void
JobqForgetRoleSettings(void)
{
	n_role_settings = 0;
	database_settings = NULL;
	database_settings_valid = false;
}

static ArrayType *
fetch_role_setting(Relation rel, Oid dbid, Oid roleid)
{
	ScanKeyData keys[2];
	SysScanDesc scan;
	HeapTuple	tup;
	ArrayType  *result = NULL;

	ScanKeyInit(&keys[0], Anum_pg_db_role_setting_setdatabase,
				BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(dbid));
	ScanKeyInit(&keys[1], Anum_pg_db_role_setting_setrole,
				BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(roleid));
	scan = systable_beginscan(rel, DbRoleSettingDatidRolidIndexId, true,
							  NULL, 2, keys);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_db_role_setting_setconfig,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			result = DatumGetArrayTypePCopy(d);
	}
	systable_endscan(scan);
	return result;
}

/*
 * Give the job the settings a login of its owner would have, at the current
 * GUC nesting level so that AtEOXact_GUC undoes them: the default
 * search_path (the worker's own is pg_catalog, pg_temp), then ALTER
 * DATABASE ... SET, then the owner's ALTER ROLE ... SET, the per-database
 * ones last, as at login.
 */
static void
apply_role_settings(Oid owner, MemoryContext cache_context)
{
	RoleSettings *rs = NULL;
	int			i;

	for (i = 0; i < n_role_settings; i++)
		if (role_settings[i].owner == owner)
			rs = &role_settings[i];

	if (rs == NULL || !database_settings_valid)
	{
		static RoleSettings scratch;
		MemoryContext oldcxt = MemoryContextSwitchTo(cache_context);
		Relation	rel = table_open(DbRoleSettingRelationId, AccessShareLock);

		if (!database_settings_valid)
		{
			database_settings = fetch_role_setting(rel, MyDatabaseId, InvalidOid);
			database_settings_valid = true;
		}
		if (rs == NULL)
		{
			rs = (n_role_settings < ROLE_SETTINGS_CACHE) ?
				&role_settings[n_role_settings++] : &scratch;
			rs->owner = owner;
			rs->all_databases = fetch_role_setting(rel, InvalidOid, owner);
			rs->this_database = fetch_role_setting(rel, MyDatabaseId, owner);
		}
		table_close(rel, AccessShareLock);
		MemoryContextSwitchTo(oldcxt);
	}

	/* temporary relations last: a job never picks up someone's by chance */
	(void) set_config_option("search_path", "\"$user\", public, pg_temp",
							 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	if (database_settings)
		ProcessGUCArray(database_settings, PGC_SUSET, PGC_S_SESSION,
						GUC_ACTION_SAVE);

	if (rs->all_databases)
		ProcessGUCArray(rs->all_databases, PGC_SUSET, PGC_S_SESSION,
						GUC_ACTION_SAVE);
	if (rs->this_database)
		ProcessGUCArray(rs->this_database, PGC_SUSET, PGC_S_SESSION,
						GUC_ACTION_SAVE);
}

/*
 * Plans of job commands, kept across jobs and transactions: a queue runs
 * the same few commands over and over, and parse analysis and planning
 * are most of what a short job costs.  A command is prepared the second
 * time it is seen, and only if it is a single statement (prepared ahead,
 * a later statement of a script could not see what an earlier one
 * creates).  The plan cache itself revalidates a kept plan after DDL, and
 * replans when the search_path or, for row-level security, the role
 * differs.  Plans are kept per owner all the same: privileges on a schema
 * named in the command are checked when it is analysed, not when the plan
 * runs, so one owner's plan must never serve another.  The table is
 * bounded; when full it is emptied.
 */
#define COMMAND_CACHE_MAX	1024

typedef struct CommandEntry
{
	uint64		hash;			/* key: hash of owner and command text */
	Oid			owner;			/* plans are per owner: see below */
	char	   *command;		/* the text, to tell collisions apart */
	SPIPlanPtr	plan;			/* NULL until prepared */
	bool		cacheable;		/* single statement */
} CommandEntry;

static HTAB *command_cache = NULL;
static MemoryContext CommandCacheContext = NULL;

static void
command_cache_reset(void)
{
	HASH_SEQ_STATUS status;
	CommandEntry *entry;

	if (command_cache == NULL)
	{
		HASHCTL		ctl;

		CommandCacheContext = AllocSetContextCreate(TopMemoryContext,
													"jobq command cache",
													ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(CommandEntry);
		ctl.hcxt = CommandCacheContext;
		command_cache = hash_create("jobq command cache", 256, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		return;
	}

	hash_seq_init(&status, command_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->plan)
			SPI_freeplan(entry->plan);
		hash_search(command_cache, &entry->hash, HASH_REMOVE, NULL);
	}
	MemoryContextReset(CommandCacheContext);
	/* the table itself lives in the context: build it again */
	command_cache = NULL;
	command_cache_reset();
}

/*
 * Run the job's command through SPI, from a kept plan when there is one.
 * Called inside the job's subtransaction, as the owner, connected to SPI.
 */
static int
execute_command(const char *command, Oid owner)
{
	uint64		hash;
	CommandEntry *entry;
	bool		found;

	if (command_cache == NULL ||
		hash_get_num_entries(command_cache) >= COMMAND_CACHE_MAX)
		command_cache_reset();

	hash = hash_bytes_extended((const unsigned char *) command,
							   strlen(command), (uint64) owner);
	entry = hash_search(command_cache, &hash, HASH_ENTER, &found);
	if (!found)
	{
		/* first sighting: remember it, run it the plain way */
		entry->command = MemoryContextStrdup(CommandCacheContext, command);
		entry->owner = owner;
		entry->plan = NULL;
		entry->cacheable = true;
		return SPI_execute(command, false, 0);
	}
	if (entry->owner != owner || strcmp(entry->command, command) != 0 ||
		!entry->cacheable)
		return SPI_execute(command, false, 0);

	if (entry->plan == NULL)
	{
		SPIPlanPtr	plan;

		if (list_length(pg_parse_query(command)) != 1)
		{
			entry->cacheable = false;
			return SPI_execute(command, false, 0);
		}
		plan = SPI_prepare(command, 0, NULL);
		if (plan == NULL)
			return SPI_result;
		/* prepared without error: keep it for the next jobs */
		SPI_keepplan(plan);
		entry->plan = plan;
	}
	return SPI_execute_plan(entry->plan, NULL, NULL, false, 0);
}

/*
 * The first row of the job's last statement as jsonb (to_jsonb of the
 * row), allocated in CurrentMemoryContext.  to_jsonb learns its argument's
 * type from the call expression, so the call carries one, made once:
 * converting straight to jsonb, instead of printing json text and parsing
 * it again, took a tenth of a no-op job's time off.
 */
static Datum
first_row_as_jsonb(HeapTuple tuple, TupleDesc tupdesc)
{
	static FmgrInfo to_jsonb_fn;
	static bool to_jsonb_ready = false;
	TupleDesc	desc = CreateTupleDescCopy(tupdesc);
	Datum		record;

	if (!to_jsonb_ready)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		fmgr_info(F_TO_JSONB, &to_jsonb_fn);
		to_jsonb_fn.fn_expr = (Node *)
			makeFuncExpr(F_TO_JSONB, JSONBOID,
						 list_make1(makeNullConst(RECORDOID, -1, InvalidOid)),
						 InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
		MemoryContextSwitchTo(old);
		to_jsonb_ready = true;
	}
	BlessTupleDesc(desc);
	record = heap_copy_tuple_as_datum(tuple, desc);
	return FunctionCall1(&to_jsonb_fn, record);
}

/*
 * Call a task's function with the job's payload, inside the job's
 * subtransaction and as its owner; its return value, copied into
 * result_cxt, is the job's result.  The function sees the database as a
 * statement would: a snapshot is taken for it.
 */
static Datum
call_task(FmgrInfo *fn, Datum payload, MemoryContext result_cxt)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		d;
	Datum		result = (Datum) 0;

	InitFunctionCallInfoData(*fcinfo, fn, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = payload;
	fcinfo->args[0].isnull = (payload == (Datum) 0);

	PushActiveSnapshot(GetTransactionSnapshot());
	d = FunctionCallInvoke(fcinfo);
	PopActiveSnapshot();

	if (!fcinfo->isnull)
	{
		MemoryContext old = MemoryContextSwitchTo(result_cxt);

		result = PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
		MemoryContextSwitchTo(old);
	}
	return result;
}

/*
 * A worker's job begins, as its owner: from here on it may be cancelled
 * (its timeout, jobq.cancel(), SIGTERM) and the watchdog watches it.
 * Returns the timeout armed, in milliseconds (0: none): the job's own, or
 * the owner's statement_timeout if shorter.
 */
static int64
worker_job_begins(JobqJob *job)
{
	int64		timeout_ms = job->timeout_ms;

	/* settings the owner's role defines are not the job's (session.c) */
	JobqSessionJobBegin();
	/* a cancel that arrived while we were between jobs is stale */
	QueryCancelPending = false;
	if (StatementTimeout > 0 &&
		(timeout_ms == 0 || StatementTimeout < timeout_ms))
		timeout_ms = StatementTimeout;
	if (timeout_ms > 0)
		enable_timeout_after(STATEMENT_TIMEOUT,
							 (int) Min(timeout_ms, (int64) INT_MAX));
	/* for the worker's watchdog, before jobq_in_job is set */
	jobq_job_deadline = timeout_ms > 0 ?
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms) : 0;
	jobq_in_job = true;
	/* a cancel published before jobq_in_job was set: see worker.c */
	pg_memory_barrier();
	if (jobq_shutdown_requested || JobqCancelRequested(job->id))
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
	RESUME_CANCEL_INTERRUPTS();
	return timeout_ms;
}

/* A worker's job ended without error, still as its owner. */
static void
worker_job_ends(int64 timeout_ms)
{
	JobqSessionJobEnd(true);
	HOLD_CANCEL_INTERRUPTS();
	jobq_in_job = false;
	if (timeout_ms > 0)
		disable_timeout(STATEMENT_TIMEOUT, false);
}

/* A worker's job raised an error: before its subtransaction is undone. */
static void
worker_job_failed(void)
{
	jobq_in_job = false;
	disable_timeout(STATEMENT_TIMEOUT, false);
	/* the job may have died with cancel interrupts resumed */
	QueryCancelHoldoffCount = 1;
}

/* what pg_stat_activity shows of a worker's job: its SQL, or its task */
static void
report_job_activity(JobqJob *job)
{
	static char activity[NAMEDATALEN + 16];

	if (job->task != NULL)
		snprintf(activity, sizeof(activity), "jobq task %s", job->task);
	pgstat_report_activity(STATE_RUNNING, job->task != NULL ? activity : job->command);
	debug_query_string = job->task != NULL ? activity : job->command;
}

/* the outcome of a job that jobq.cancel() cancelled: never retried */
static void
set_cancelled(JobqOutcome *out)
{
	out->kind = JOBQ_CANCELLED;
	out->error = pstrdup(JOBQ_CANCELLED_MESSAGE);
	strlcpy(out->sqlstate, unpack_sql_state(ERRCODE_QUERY_CANCELED),
			sizeof(out->sqlstate));
}

/* an error for what SPI said of a job's command, if it failed */
static void
check_command_rc(int rc)
{
	if (rc == SPI_ERROR_TRANSACTION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_TERMINATION),
				 errmsg("transaction control statements are not allowed in a job")));
	else if (rc == SPI_ERROR_COPY)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("COPY from or to the client is not possible in a job"),
				 errhint("Copy from or to a file or a program instead.")));
	else if (rc < 0)
		elog(ERROR, "could not run job command: %s", SPI_result_code_string(rc));
}

/*
 * The job's SQL, run through SPI: its result is the first row of its last
 * statement, made in result_cxt (0 if none).
 */
static Datum
run_command(JobqJob *job, bool here, MemoryContext result_cxt)
{
	Datum		result = (Datum) 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	check_command_rc(here ? SPI_execute(job->command, false, 0) :
					 execute_command(job->command, job->owner));
	PopActiveSnapshot();

	/* the cast of the row to jsonb may run the owner's code: still the job */
	if (SPI_tuptable != NULL && SPI_processed > 0)
	{
		MemoryContext spicxt = MemoryContextSwitchTo(result_cxt);

		result = first_row_as_jsonb(SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
		MemoryContextSwitchTo(spicxt);
	}
	SPI_finish();
	return result;
}

/*
 * Inside the job's subtransaction: run it as its owner, from a login-like
 * baseline, and return its result (made in result_cxt).  Everything up to
 * the end of the job may run the owner's code (a cast to json of the
 * result's type, deferred triggers), so it all stays under the job's
 * timeout, cancellable, and watched.  *permanent is set before an error
 * that retrying cannot help.
 */
static Datum
run_as_owner(JobqJob *job, bool here, MemoryContext result_cxt,
			 volatile bool *permanent)
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	int64		timeout_ms;
	Datum		result;
	FmgrInfo   *task_fn = NULL;

	JobqCheckOwner(job->owner, false, permanent);
	if (job->task != NULL)
	{
		/* looked up as the worker: the owner's grants do not matter */
		PushActiveSnapshot(GetTransactionSnapshot());
		task_fn = JobqTaskForJob(job->task, job->owner, permanent);
		PopActiveSnapshot();
	}

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(job->owner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	save_nestlevel = NewGUCNestLevel();
	apply_role_settings(job->owner, result_cxt);
	timeout_ms = here ? 0 : worker_job_begins(job);

	result = task_fn != NULL ? call_task(task_fn, job->payload, result_cxt) :
		run_command(job, here, result_cxt);

	/* a result too large to keep fails the attempt, its effects undone */
	if (result != (Datum) 0)
		JobqCheckSize(result, "job result", jobq_max_result_size,
					  "jobq.max_result_size");

	/*
	 * Still as the owner and inside the subtransaction: fire the job's
	 * deferred triggers now (at the commit of the execution transaction
	 * they would run as the worker), and discard what the job left in the
	 * session.  An error in either is the job's error.
	 */
	AfterTriggerFireDeferred();

	/* a job that caught the cancel (or ended as it came) is undone */
	if (JobqCancelRequested(job->id))
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("job cancelled by jobq.cancel()")));
	if (!here)
		worker_job_ends(timeout_ms);

	/* undo the job's SET commands and the owner's role settings */
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return result;
}

/*
 * The outcome of a job that raised edata (its subtransaction already
 * rolled back): cancelled, interrupted, failed, or to be retried.
 */
static void
error_outcome(JobqJob *job, JobqOutcome *out, ErrorData *edata, bool permanent)
{
	if (JobqCancelRequested(job->id))
	{
		/* whatever the error was, the job was cancelled: not retried */
		set_cancelled(out);
		return;
	}
	if (jobq_shutdown_requested && edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
	{
		/*
		 * Interrupted by a shutdown: not the job's fault, so the attempt is
		 * not counted, but the job goes to the back of the line for a while
		 * (retry.c, JobqWriteInterruptions).
		 */
		out->kind = JOBQ_INTERRUPTED;
		return;
	}
	/* an error message is bounded as an executor's is (jobq.fail()) */
	out->error = edata->message ?
		JobqClipText(edata->message, jobq_max_payload_size) :
		pstrdup("unknown error");
	strlcpy(out->sqlstate, unpack_sql_state(edata->sqlerrcode), sizeof(out->sqlstate));
	if (permanent || job->attempts >= job->max_attempts)
		out->kind = JOBQ_FAILED;
	else
	{
		out->kind = JOBQ_RETRY;
		out->next_run_at = JobqNextAttemptTime(job->attempts);
	}
}

/*
 * Run one job and fill in its outcome.  Must be called inside an
 * execution transaction; CurrentMemoryContext receives the outcome.
 *
 * With here, the job runs in the session of a jobq.wait() caller
 * (inplace.c), not in a worker: the caller's query stays what the session
 * shows, no job timeout or watchdog applies (the caller's own statement
 * timeout and cancel do, and a cancel is the caller's, not the job's), and
 * what the session holds is the caller's own, so it is not cleaned.
 */
void
JobqExecuteJob(JobqJob *job, JobqOutcome *out, MemoryContext job_context,
			   bool here)
{
	MemoryContext outercxt = CurrentMemoryContext;
	ResourceOwner outerowner = CurrentResourceOwner;
	const char *save_debug_query_string = debug_query_string;
	volatile bool permanent = false;

	memset(out, 0, sizeof(*out));
	out->started_at = GetCurrentTimestamp();
	out->pid = MyProcPid;
	if (!here)
		report_job_activity(job);

	/* cancelled by jobq.cancel() while it waited in this worker's claim */
	if (JobqCancelRequested(job->id))
	{
		set_cancelled(out);
		debug_query_string = save_debug_query_string;
		out->finished_at = GetCurrentTimestamp();
		return;
	}

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(job_context);

	PG_TRY();
	{
		Datum		result = run_as_owner(job, here, outercxt, &permanent);

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(outercxt);
		CurrentResourceOwner = outerowner;

		out->kind = JOBQ_SUCCEEDED;
		out->result = result;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		if (!here)
			worker_job_failed();

		MemoryContextSwitchTo(outercxt);
		edata = CopyErrorData();
		FlushErrorState();

		/*
		 * Rolls back the effects (temporary tables created by the job
		 * among them), pending trigger events, the identity switch and the
		 * GUCs; what is not transactional is discarded next.
		 */
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(outercxt);
		CurrentResourceOwner = outerowner;
		if (!here)
			JobqSessionJobEnd(false);
		else if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);	/* the caller's own cancel */
		error_outcome(job, out, edata, permanent);
	}
	PG_END_TRY();

	debug_query_string = save_debug_query_string;
	out->finished_at = GetCurrentTimestamp();
}
