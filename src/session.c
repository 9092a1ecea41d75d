/*-------------------------------------------------------------------------
 *
 * session.c
 *		What a job may leave in its worker's session, and when a worker
 *		must be a fresh process before it runs another owner's job.
 *
 * Workers run the jobs of every role one after the other in one backend.
 * State that PostgreSQL itself keeps per session is discarded after each
 * job (JobqSessionJobEnd): cursors, prepared statements, session advisory
 * locks, temporary tables, cached sequence values; the job's settings are
 * undone by execute.c.  What cannot be discarded is the state of code
 * that PostgreSQL does not know about: a dblink or postgres_fdw
 * connection, a PL interpreter's globals, any C library's statics, a
 * custom setting (placeholder) that a job defined.
 *
 * So a worker's session is "tainted" once a job may have left such state:
 * the job called a function written in C outside PostgreSQL itself, jobq
 * and PL/pgSQL, or in a procedural language other than SQL and PL/pgSQL;
 * it ran LOAD; or the number of settings grew while it ran.  Functions are
 * seen as they are looked up (needs_fmgr_hook, which fmgr_info consults
 * for every function that is not built in) and as they are entered
 * through fmgr_security_definer (fmgr_hook, for SECURITY DEFINER functions
 * and those with SET clauses, which skip the first hook).  A tainted
 * session runs jobs of the owner that tainted it only: when the next job
 * in priority order belongs to another owner, the worker hands it back and
 * exits, and the launcher starts a fresh process at once (worker.c).  A
 * session that ran only SQL, PL/pgSQL and built-in functions carries
 * nothing from one job to the next, so it switches owners in place: the
 * common case costs nothing.
 *
 * LISTEN is refused inside a job: a worker never reads notifications, so
 * its registration would hold the notification queue for everybody.
 *
 * IDENTIFICATION
 *		src/session.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "commands/prepare.h"
#include "commands/sequence.h"
#include "common/pg_prng.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lock.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/portal.h"
#include "utils/syscache.h"

#include "jobq.h"

static needs_fmgr_hook_type prev_needs_fmgr_hook = NULL;
static fmgr_hook_type prev_fmgr_hook = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

static bool tainted = false;	/* state may outlive the jobs that left it */
static Oid	session_owner = InvalidOid; /* owner of the jobs run so far */
static int	settings_at_start = 0;

/* C libraries whose functions keep nothing of one job for the next */
static bool
trusted_library(const char *probin)
{
	return strcmp(probin, "$libdir/jobq") == 0 ||
		strcmp(probin, "$libdir/plpgsql") == 0;
}

/*
 * Taint the session if function fn may keep state between calls that
 * jobq cannot discard.
 */
static void
note_function(Oid fn)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	bool		clean = false;

	if (tainted)
		return;
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
	{
		tainted = true;
		return;
	}
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->prolang == INTERNALlanguageId || proc->prolang == SQLlanguageId)
		clean = true;
	else if (proc->prolang == ClanguageId)
	{
		bool		isnull;
		Datum		bin = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_probin,
										  &isnull);

		clean = !isnull && trusted_library(TextDatumGetCString(bin));
	}
	else
	{
		HeapTuple	ltup = SearchSysCache1(LANGOID,
										   ObjectIdGetDatum(proc->prolang));

		if (HeapTupleIsValid(ltup))
		{
			clean = strcmp(NameStr(((Form_pg_language) GETSTRUCT(ltup))->lanname),
						   "plpgsql") == 0;
			ReleaseSysCache(ltup);
		}
	}
	ReleaseSysCache(tup);
	if (!clean)
		tainted = true;
}

static bool
session_needs_fmgr_hook(Oid fn)
{
	note_function(fn);
	return prev_needs_fmgr_hook ? prev_needs_fmgr_hook(fn) : false;
}

static void
session_fmgr_hook(FmgrHookEventType event, FmgrInfo *flinfo, Datum *arg)
{
	if (event == FHET_START)
		note_function(flinfo->fn_oid);
	if (prev_fmgr_hook)
		prev_fmgr_hook(event, flinfo, arg);
}

static void
session_process_utility(PlannedStmt *pstmt, const char *queryString,
						bool readOnlyTree, ProcessUtilityContext context,
						ParamListInfo params, QueryEnvironment *queryEnv,
						DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (IsA(stmt, ListenStmt))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("LISTEN is not possible in a job"),
				 errdetail("A jobq worker never reads notifications.")));
	if (IsA(stmt, LoadStmt))
		tainted = true;

	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
							queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

/*
 * A worker watches its session from its start: called once, before it
 * runs anything.
 */
void
JobqSessionInit(void)
{
	/*
	 * PL/pgSQL defines settings of its own when it is loaded: load it now,
	 * so that the first job that uses it does not count as defining them.
	 */
	load_file("$libdir/plpgsql", false);

	prev_needs_fmgr_hook = needs_fmgr_hook;
	needs_fmgr_hook = session_needs_fmgr_hook;
	prev_fmgr_hook = fmgr_hook;
	fmgr_hook = session_fmgr_hook;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = session_process_utility;
}

/*
 * May this session run a job of owner?  Not if another owner's job may
 * have left state in it.  A clean session taken over by another owner
 * draws a new seed for random(), which a job may have set with setseed().
 */
bool
JobqSessionMayRun(Oid owner)
{
	Oid			temp_namespace;
	Oid			temp_toast_namespace;

	if (owner == session_owner)
		return true;
	if (tainted && OidIsValid(session_owner))
		return false;

	/*
	 * PostgreSQL checks the TEMP privilege when a session first creates its
	 * temporary schema, never again: a role without it must not inherit
	 * the schema another owner's job created.
	 */
	GetTempNamespaceState(&temp_namespace, &temp_toast_namespace);
	if (OidIsValid(temp_namespace) &&
		pg_database_aclcheck(MyDatabaseId, owner, ACL_CREATE_TEMP) != ACLCHECK_OK)
		return false;
	if (OidIsValid(session_owner))
		DirectFunctionCall1(setseed,
							Float8GetDatum(pg_prng_double(&pg_global_prng_state) * 2.0 - 1.0));
	session_owner = owner;
	return true;
}

/* a job of the session's owner starts */
void
JobqSessionJobBegin(void)
{
	settings_at_start = GetNumConfigOptions();
}

/*
 * Discard what a job may leave in the session: open cursors, prepared
 * statements, session-level advisory locks, cached sequence values and,
 * with drop_temp, temporary tables (after a failed job its subtransaction
 * has already removed those).  GUCs are undone by the caller.
 * Transaction-level advisory locks stay until the execution transaction
 * ends, as the job asked.  A setting the job defined (a placeholder such
 * as myapp.x) cannot be removed: it taints the session.
 */
void
JobqSessionJobEnd(bool drop_temp)
{
	Oid			temp_namespace;
	Oid			temp_toast_namespace;

	PortalHashTableDeleteAll();
	DropAllPreparedStatements();
	LockReleaseSession(USER_LOCKMETHOD);
	if (drop_temp)
	{
		GetTempNamespaceState(&temp_namespace, &temp_toast_namespace);
		if (OidIsValid(temp_namespace))
			ResetTempTableNamespace();
	}
	ResetSequenceCaches();
	if (GetNumConfigOptions() != settings_at_start)
		tainted = true;
}

/*
 * A job runs as its owner, which must exist and be permitted to log in:
 * checked when a job is enqueued (enqueuing: the caller is the owner) and
 * again when it runs.  Raises 42704 or 28000; *permanent, if given, is set
 * first, since retrying cannot help.
 */
void
JobqCheckOwner(Oid owner, bool enqueuing, volatile bool *permanent)
{
	HeapTuple	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(owner));
	bool		canlogin;
	NameData	rolname;

	if (!HeapTupleIsValid(tup))
	{
		if (permanent)
			*permanent = true;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u does not exist", owner),
				 errdetail("The role that enqueued the job has been dropped.")));
	}
	canlogin = ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;
	rolname = ((Form_pg_authid) GETSTRUCT(tup))->rolname;
	ReleaseSysCache(tup);
	if (canlogin)
		return;
	if (permanent)
		*permanent = true;
	if (enqueuing)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("role \"%s\" cannot own jobs because it is not permitted to log in",
						NameStr(rolname)),
				 errdetail("A job runs as the role that enqueued it (current_user)."),
				 errhint("Enqueue the job as a role with the LOGIN attribute.")));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("role \"%s\" is not permitted to log in", NameStr(rolname)),
			 errdetail("A job runs as the role that enqueued it, and that role must have the LOGIN attribute.")));
}
