/*-------------------------------------------------------------------------
 *
 * task.c
 *		Registered tasks: names under which functions (jsonb) -> jsonb are
 *		called, and the built-in tasks jobq.noop and jobq.sleep.
 *
 * jobq.task maps a task's name to its function, or, for an external task,
 * to no function: external executors run its jobs (lease.c), and the
 * workers never claim them (their jobq.job.external is set at enqueue).  jobq.register_task() and
 * jobq.unregister_task() write it, as the table's owner (users may only
 * read it), after checking what the caller may do: the function must
 * have the signature of a task and the caller must be allowed to execute
 * it; a task may be registered again or unregistered only by the role
 * that registered it, or by a superuser; names that begin with "jobq."
 * are the extension's own.
 *
 * A job of a task is resolved by name when it runs, so a task registered
 * again calls its new function, and a task unregistered after its jobs
 * were queued fails them with an error that says so.  Because of that, a
 * job calls a task only if its owner trusts both the task's registrant
 * and the function's owner (check_trusted), at enqueue and at run time.  Every backend keeps
 * what it resolved (the function, and its FmgrInfo, which is how a
 * worker calls it) in a small cache, emptied when jobq.task changes (the
 * API sends a relcache invalidation for the table, delivered to every
 * backend at commit) and when any function is altered or dropped.
 *
 * IDENTIFICATION
 *		src/task.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_auth_members.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "jobq.h"

PG_FUNCTION_INFO_V1(jobq_register_task);
PG_FUNCTION_INFO_V1(jobq_unregister_task);
PG_FUNCTION_INFO_V1(jobq_allow_executor);
PG_FUNCTION_INFO_V1(jobq_disallow_executor);
PG_FUNCTION_INFO_V1(jobq_noop);
PG_FUNCTION_INFO_V1(jobq_sleep);

/* what the task cache knows of one task */
typedef struct TaskEntry
{
	char		name[NAMEDATALEN];	/* hash key */
	Oid			fn;				/* InvalidOid for an external task */
	Oid			registered_by;
	Oid		   *executors;		/* roles allowed to run an external task's jobs */
	int			nexecutors;
	bool		flinfo_ready;
	FmgrInfo	flinfo;			/* for calls; fn_mcxt is the cache's */
} TaskEntry;

static void check_task_function(Oid fn);

static HTAB *task_cache = NULL;
static MemoryContext TaskCacheContext = NULL;
static bool task_cache_valid = false;
static Oid	task_relid = InvalidOid;
static bool callbacks_registered = false;

static void
task_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == task_relid)
		task_cache_valid = false;
}

static void
task_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	task_cache_valid = false;
}

/* an empty cache */
static void
task_cache_reset(void)
{
	HASHCTL		ctl;

	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(task_relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, task_syscache_callback, (Datum) 0);
		callbacks_registered = true;
	}
	if (TaskCacheContext == NULL)
		TaskCacheContext = AllocSetContextCreate(TopMemoryContext,
												 "jobq task cache",
												 ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(TaskCacheContext);
	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = sizeof(TaskEntry);
	ctl.hcxt = TaskCacheContext;
	task_cache = hash_create("jobq task cache", 16, &ctl,
							 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	task_cache_valid = true;
}

/* the OID of jobq.task, or InvalidOid if the extension has no such table */
static Oid
task_table(void)
{
	return JobqSchemaRelid("task");
}

/*
 * A task name is at most NAMEDATALEN - 1 bytes long and not empty.
 */
void
JobqCheckTaskName(const char *name)
{
	if (name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("task name must not be empty")));
	if (strlen(name) > NAMEDATALEN - 1)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("task name \"%s\" is too long", name),
				 errdetail("Task names are at most %d bytes long.",
						   NAMEDATALEN - 1)));
}

/*
 * The cache entry of task name, looked up in jobq.task if the cache does
 * not have it; NULL if the task is not registered.  Needs a transaction
 * and an active snapshot; runs as the current user, who needs SELECT on
 * jobq.task (granted to PUBLIC).
 */
static TaskEntry *
task_lookup(const char *name)
{
	TaskEntry  *entry;
	bool		found;
	bool		stale;
	Oid			fn = InvalidOid;
	Oid			registered_by = InvalidOid;
	Oid		   *executors = NULL;
	int			nexecutors = 0;

	/* a name that long cannot be registered */
	if (strlen(name) > NAMEDATALEN - 1)
		return NULL;

	/* AcceptInvalidationMessages may run below; a reset clears the table */
	if (!task_cache_valid || task_cache == NULL)
		task_cache_reset();
	entry = hash_search(task_cache, name, HASH_FIND, NULL);
	if (entry != NULL)
		return entry;

	task_relid = task_table();
	{
		MemoryContext callercxt = CurrentMemoryContext;
		Oid			argtypes[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(name)};
		bool		isnull;
		Datum		d;

		/* not read-only: a snapshot taken now, after any invalidation */
		if (JobqExecuteAsCaller(JobqSchemaGet()->task_executors ?
								"SELECT fn::pg_catalog.oid, registered_by::pg_catalog.oid,"
								"       executors::pg_catalog.oid[]"
								"  FROM jobq.task WHERE task OPERATOR(pg_catalog.=) $1" :
								"SELECT fn::pg_catalog.oid, registered_by::pg_catalog.oid,"
								"       NULL::pg_catalog.oid[]"
								"  FROM jobq.task WHERE task OPERATOR(pg_catalog.=) $1",
								1, argtypes, values, false) != SPI_OK_SELECT)
			elog(ERROR, "could not look up jobq task \"%s\"", name);
		if (SPI_processed > 0)
		{
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			fn = isnull ? InvalidOid : DatumGetObjectId(d);
			registered_by = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 2, &isnull));
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
			if (!isnull)
			{
				Datum	   *elems;
				bool	   *nulls;
				int			i;

				deconstruct_array(DatumGetArrayTypeP(d), OIDOID, sizeof(Oid), true,
								  TYPALIGN_INT, &elems, &nulls, &nexecutors);
				/* in the caller's memory: SPI_finish() frees SPI's */
				executors = MemoryContextAlloc(callercxt, sizeof(Oid) * Max(nexecutors, 1));
				for (i = 0; i < nexecutors; i++)
					executors[i] = nulls[i] ? InvalidOid : DatumGetObjectId(elems[i]);
			}
		}
		SPI_finish();
	}
	if (!OidIsValid(registered_by))
		return NULL;

	/*
	 * An invalidation processed while the statement ran may be for a change
	 * it did not see: then the entry serves this call only.
	 */
	stale = !task_cache_valid;
	if (stale)
		task_cache_reset();
	entry = hash_search(task_cache, name, HASH_ENTER, &found);
	entry->fn = fn;
	entry->registered_by = registered_by;
	entry->nexecutors = nexecutors;
	entry->executors = NULL;
	if (nexecutors > 0)
	{
		entry->executors = MemoryContextAlloc(TaskCacheContext,
											  sizeof(Oid) * nexecutors);
		memcpy(entry->executors, executors, sizeof(Oid) * nexecutors);
	}
	entry->flinfo_ready = false;
	if (stale)
		task_cache_valid = false;
	return entry;
}

/* schema-qualified name of function fn, for messages */
static char *
qualified_function_name(Oid fn)
{
	char	   *nsp = get_namespace_name(get_func_namespace(fn));
	char	   *name = get_func_name(fn);

	if (nsp == NULL || name == NULL)
		return psprintf("with OID %u", fn);
	return quote_qualified_identifier(nsp, name);
}

/*
 * Does owner trust role with the code its jobs run?  A role trusts itself,
 * superusers, and the roles a superuser made it a direct member of.
 * Membership alone does not do: a superuser is a member of every role
 * (has_privs_of_role), and in PostgreSQL 15 a role with CREATEROLE may
 * make anybody a member of any role that is not a superuser, so membership
 * could be forced on the victim.  The grantor of the membership must be a
 * superuser.
 */
static bool
trusts_role(Oid owner, Oid role)
{
	HeapTuple	tup;
	bool		trusted = false;

	if (owner == role || superuser_arg(role))
		return true;
	tup = SearchSysCache2(AUTHMEMROLEMEM, ObjectIdGetDatum(role),
						  ObjectIdGetDatum(owner));
	if (HeapTupleIsValid(tup))
	{
		trusted = superuser_arg(((Form_pg_auth_members) GETSTRUCT(tup))->grantor);
		ReleaseSysCache(tup);
	}
	return trusted;
}

/*
 * A job runs its task's function with its owner's privileges.  Two roles
 * choose that code: the task's registrant (who may register the task
 * again, to another function, for the jobs already queued) and the
 * function's owner (who may replace its body).  A job calls the task only
 * if its owner trusts both; otherwise an error, which retrying cannot
 * help (*permanent, if given, is set first).
 */
static void
check_trusted(const char *name, Oid owner, Oid registered_by, Oid fn,
			  volatile bool *permanent)
{
	Oid			fn_owner = InvalidOid;
	HeapTuple	tup;
	const char *r;
	const char *o;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (HeapTupleIsValid(tup))
	{
		fn_owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
		ReleaseSysCache(tup);
	}
	if (trusts_role(owner, registered_by) &&
		OidIsValid(fn_owner) && trusts_role(owner, fn_owner))
		return;

	if (permanent)
		*permanent = true;
	r = GetUserNameFromId(registered_by, true);
	o = OidIsValid(fn_owner) ? GetUserNameFromId(fn_owner, true) : NULL;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for task \"%s\"", name),
			 errdetail("The task was registered by role \"%s\" and its function belongs to role \"%s\"; the jobs of role \"%s\" call only code of roles they trust: themselves, superusers, and roles a superuser made them members of.",
					   r ? r : "?", o ? o : "?", GetUserNameFromId(owner, false))));
}

/*
 * May role run, as an external executor, a job of task name that owner
 * queued?  The task must be registered now as an external task; role must
 * be its registrant or a member of a role that an administrator allowed to
 * run it (jobq.allow_executor()); and owner must still be allowed to queue
 * its jobs (a member of the registrant who trusts it, as at enqueue): a
 * job queued for a task that was unregistered, and whose name another role
 * then registered, goes to nobody's executors.  Membership in an allowed
 * role is taken as PostgreSQL grants it, except that a superuser is not a
 * member of every role here: an executor that runs as a superuser runs
 * only what it was allowed, or registered itself.
 */
bool
JobqTaskServes(const char *name, Oid role, Oid owner)
{
	TaskEntry  *entry = task_lookup(name);
	bool		allowed = false;
	int			i;

	if (entry == NULL || OidIsValid(entry->fn))
		return false;
	if (entry->registered_by == role)
		allowed = true;
	for (i = 0; i < entry->nexecutors && !allowed; i++)
		allowed = OidIsValid(entry->executors[i]) &&
			is_member_of_role_nosuper(role, entry->executors[i]);
	return allowed &&
		(owner == entry->registered_by ||
		 (has_privs_of_role(owner, entry->registered_by) &&
		  trusts_role(owner, entry->registered_by)));
}

/* is some role that an administrator allowed to run the task still there? */
static bool
executor_exists(TaskEntry *entry)
{
	int			i;

	for (i = 0; i < entry->nexecutors; i++)
		if (OidIsValid(entry->executors[i]) &&
			SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(entry->executors[i])))
			return true;
	return false;
}

/*
 * May role call jobq.claim(), and so run the external tasks it registered?
 * (The function as this version of the extension defines it.)
 */
static bool
may_claim(Oid role)
{
	static Oid	claim = InvalidOid;
	static uint64 claim_generation = 0;

	if (superuser_arg(role))
		return true;
	/* looked up once per version of the schema */
	if (!OidIsValid(claim) || claim_generation != JobqSchemaGet()->generation ||
		!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(claim)))
	{
		Oid			argtypes[8] = {TEXTARRAYOID, TEXTARRAYOID, INT4OID, INTERVALOID,
		TEXTOID, INTERVALOID, TEXTOID, INT4OID};

		claim = LookupFuncName(list_make2(makeString("jobq"), makeString("claim")),
							   lengthof(argtypes), argtypes, true);
		claim_generation = JobqSchemaGet()->generation;
	}
	return OidIsValid(claim) &&
		pg_proc_aclcheck(claim, role, ACL_EXECUTE) == ACLCHECK_OK;
}

/*
 * jobq.enqueue_task(): the function that task name calls now, which the
 * caller must be allowed to execute; or InvalidOid, with *external set,
 * for an external task.  Its jobs go to the executors that the task's
 * registrant runs: the registrant decides who may queue them (itself and
 * its members, as EXECUTE on a function would), and the caller must
 * trust the registrant, as it would for a function.
 */
Oid
JobqTaskForEnqueue(const char *name, bool *external)
{
	TaskEntry  *entry;
	AclResult	aclresult;

	JobqCheckTaskName(name);
	entry = task_lookup(name);
	if (entry == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("task \"%s\" is not registered", name),
				 errhint("Register it with jobq.register_task().")));
	*external = !OidIsValid(entry->fn);
	if (*external)
	{
		const char *r = GetUserNameFromId(entry->registered_by, true);

		/* the executors are the registrant's: it says who may feed them */
		if (!has_privs_of_role(GetUserId(), entry->registered_by))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for task \"%s\"", name),
					 errdetail("Jobs of an external task may be queued only by the role that registered it, role \"%s\", and its members.",
							   r ? r : "?")));
		if (!trusts_role(GetUserId(), entry->registered_by))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for task \"%s\"", name),
					 errdetail("The external task was registered by role \"%s\"; the jobs of role \"%s\" go only to tasks of roles they trust: themselves, superusers, and roles a superuser made them members of.",
							   r ? r : "?", GetUserNameFromId(GetUserId(), false))));
		/* a job that no role may ever claim would only weigh on the claims */
		if (!executor_exists(entry) && !may_claim(entry->registered_by))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("no role may run the jobs of external task \"%s\"", name),
					 errdetail("Its registrant, role \"%s\", may not call jobq.claim(), and no executor role is allowed to run it.",
							   r ? r : "?"),
					 errhint("An administrator allows an executor role with jobq.allow_executor().")));
		return InvalidOid;
	}
	check_trusted(name, GetUserId(), entry->registered_by, entry->fn, NULL);
	aclresult = pg_proc_aclcheck(entry->fn, GetUserId(), ACL_EXECUTE);
	if (aclresult != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s of task \"%s\"",
						qualified_function_name(entry->fn), name),
				 errdetail("A task's job runs as the role that enqueued it, which must be allowed to execute the task's function.")));
	return entry->fn;
}

/*
 * A worker, about to run a job of task name for role owner: the function
 * to call, in an FmgrInfo of CurrentMemoryContext (the cache may be
 * emptied while the function runs: by a job that creates a function, for
 * one).  Errors that retrying cannot help set *permanent first: the task
 * is no longer registered, its function is gone, or the owner may not
 * execute it.  Needs an active snapshot.
 */
FmgrInfo *
JobqTaskForJob(const char *name, Oid owner, volatile bool *permanent)
{
	TaskEntry  *entry = task_lookup(name);
	AclResult	aclresult;
	FmgrInfo   *flinfo;

	if (entry == NULL)
	{
		*permanent = true;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("task \"%s\" is not registered", name),
				 errdetail("The task was unregistered after the job was enqueued.")));
	}
	if (!OidIsValid(entry->fn))
	{
		*permanent = true;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("task \"%s\" is external", name),
				 errdetail("The task was registered again without a function after the job was enqueued; external executors run only the jobs enqueued while it was external.")));
	}
	if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(entry->fn)))
	{
		*permanent = true;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u of task \"%s\" does not exist",
						entry->fn, name),
				 errdetail("The task's function was dropped after the task was registered.")));
	}
	check_trusted(name, owner, entry->registered_by, entry->fn, permanent);
	/* the OID may have been reused by another function since */
	*permanent = true;
	check_task_function(entry->fn);
	*permanent = false;
	aclresult = pg_proc_aclcheck(entry->fn, owner, ACL_EXECUTE);
	if (aclresult != ACLCHECK_OK)
	{
		*permanent = true;
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s of task \"%s\"",
						qualified_function_name(entry->fn), name),
				 errdetail("The job's owner, role \"%s\", may not execute it.",
						   GetUserNameFromId(owner, false))));
	}
	if (!entry->flinfo_ready)
	{
		fmgr_info_cxt(entry->fn, &entry->flinfo, TaskCacheContext);
		entry->flinfo_ready = true;
	}
	flinfo = palloc(sizeof(FmgrInfo));
	fmgr_info_copy(flinfo, &entry->flinfo, CurrentMemoryContext);
	return flinfo;
}

/*
 * A task's function takes one jsonb and returns one jsonb; it is a plain
 * function (a procedure could commit, which a job cannot).
 */
static void
check_task_function(Oid fn)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Form_pg_proc proc;
	bool		ok;
	bool		temp;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fn)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	ok = proc->prokind == PROKIND_FUNCTION && !proc->proretset &&
		proc->pronargs == 1 && proc->proargtypes.values[0] == JSONBOID &&
		proc->prorettype == JSONBOID;
	temp = isAnyTempNamespace(proc->pronamespace);
	ReleaseSysCache(tup);
	/* a session's temporary function: any session may replace it later */
	if (temp)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function \"%s\" cannot be a task", get_func_name(fn)),
				 errdetail("A task's function must not be in a temporary schema.")));
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s cannot be a task", format_procedure(fn)),
				 errdetail("A task's function takes one argument of type jsonb and returns jsonb.")));
}

static void
check_not_builtin(const char *name)
{
	if (strncmp(name, "jobq.", 5) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("task name \"%s\" is reserved", name),
				 errdetail("Task names that begin with \"jobq.\" belong to the jobq extension.")));
}

/*
 * Run a statement that writes jobq.task, as the tables' owner, and have
 * every backend forget what it knew of the tasks when the transaction
 * commits.  Connects to SPI; the caller finishes.
 */
static int
execute_task_write(const char *sql, int nargs, Oid *argtypes, Datum *values)
{
	Oid			relid = task_table();
	int			rc;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"jobq.task\" does not exist"),
				 errhint("Update the extension with ALTER EXTENSION jobq UPDATE.")));
	rc = JobqExecuteAsOwner(sql, nargs, argtypes, values, false);
	CacheInvalidateRelcacheByRelid(relid);
	return rc;
}

/*
 * Register a task ($1, function $2 unless $5, by role $3; $4: the caller
 * is a superuser, who may take over another role's task) in one
 * statement, so that two registrations of a new name cannot both think
 * the name was free: the second updates the first's row only if it may.
 * The executors allowed to run an external task stay allowed while it is
 * registered again as an external task by the same role; a change of
 * registrant, or to a function, forgets them.
 */
#define REGISTER_SQL(keep) \
	"INSERT INTO jobq.task AS t (task, fn, registered_by, registered_at)" \
	" VALUES ($1, CASE WHEN $5 THEN NULL ELSE $2::pg_catalog.regprocedure END," \
	"         $3::pg_catalog.regrole, pg_catalog.now())" \
	" ON CONFLICT (task) DO UPDATE" \
	"   SET fn = excluded.fn, registered_by = excluded.registered_by," \
	"       registered_at = excluded.registered_at" keep \
	" WHERE t.registered_by OPERATOR(pg_catalog.=) excluded.registered_by OR $4" \
	" RETURNING 1"
static const char *register_sql = REGISTER_SQL(
	", executors = CASE WHEN t.registered_by OPERATOR(pg_catalog.=) excluded.registered_by"
	"                    AND t.fn IS NULL AND excluded.fn IS NULL"
	"                   THEN t.executors END");
static const char *register_sql_0_5 = REGISTER_SQL("");

/*
 * jobq.register_task(task text, fn regprocedure): fn NULL registers an
 * external task.
 */
Datum
jobq_register_task(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			fn;
	Oid			caller = GetUserId();
	AclResult	aclresult;
	Oid			argtypes[5] = {TEXTOID, OIDOID, OIDOID, BOOLOID, BOOLOID};
	Datum		values[5];
	int			rc;

	JobqCheckPreloaded();
	PreventCommandIfReadOnly("jobq.register_task()");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task name must not be null")));
	/* no function: an external task (0.5.0) */
	if (PG_ARGISNULL(1) && !JobqSchemaRequire()->executors)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task function must not be null"),
				 errhint("External tasks need version 0.5.0 of the extension: update it with ALTER EXTENSION jobq UPDATE.")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	fn = PG_ARGISNULL(1) ? InvalidOid : PG_GETARG_OID(1);
	/* NULL says "external"; OID 0 is no function at all */
	if (!PG_ARGISNULL(1) && !OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fn),
				 errhint("Pass NULL to register an external task.")));

	JobqCheckTaskName(name);
	check_not_builtin(name);
	if (OidIsValid(fn))
	{
		check_task_function(fn);
		aclresult = pg_proc_aclcheck(fn, caller, ACL_EXECUTE);
		if (aclresult != ACLCHECK_OK)
			aclcheck_error(aclresult, OBJECT_FUNCTION, get_func_name(fn));
	}

	values[0] = CStringGetTextDatum(name);
	values[1] = ObjectIdGetDatum(fn);
	values[2] = ObjectIdGetDatum(caller);
	values[3] = BoolGetDatum(superuser());
	values[4] = BoolGetDatum(!OidIsValid(fn));
	rc = execute_task_write(JobqSchemaGet()->task_executors ?
							register_sql : register_sql_0_5, 5, argtypes, values);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not register jobq task \"%s\"", name);
	if (SPI_processed == 0)
	{
		Oid			argtypes1[1] = {TEXTOID};
		bool		isnull;
		Oid			owner;

		SPI_finish();
		if (JobqExecuteAsCaller("SELECT registered_by::pg_catalog.oid FROM jobq.task"
								" WHERE task OPERATOR(pg_catalog.=) $1",
								1, argtypes1, values, true) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "could not look up jobq task \"%s\"", name);
		owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("task \"%s\" is registered by role \"%s\"",
						name, GetUserNameFromId(owner, true) ?
						GetUserNameFromId(owner, true) : "?"),
				 errdetail("Only the role that registered a task, or a superuser, may register it again or unregister it.")));
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * jobq.unregister_task(task text): false if there was no such task.
 */
Datum
jobq_unregister_task(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			argtypes[3] = {TEXTOID, OIDOID, BOOLOID};
	Datum		values[3];
	bool		isnull;
	int			rc;
	Datum		allowed;

	JobqCheckPreloaded();
	PreventCommandIfReadOnly("jobq.unregister_task()");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task name must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	check_not_builtin(name);

	values[0] = CStringGetTextDatum(name);
	values[1] = ObjectIdGetDatum(GetUserId());
	values[2] = BoolGetDatum(superuser());
	rc = execute_task_write(
		"WITH t AS (SELECT task, registered_by OPERATOR(pg_catalog.=) $2::pg_catalog.regrole OR $3 AS allowed"
		"             FROM jobq.task WHERE task OPERATOR(pg_catalog.=) $1 FOR UPDATE),"
		"     d AS (DELETE FROM jobq.task USING t"
		"            WHERE task.task OPERATOR(pg_catalog.=) t.task AND t.allowed)"
		"SELECT allowed FROM t",
		3, argtypes, values);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not unregister jobq task \"%s\"", name);
	if (SPI_processed == 0)
	{
		SPI_finish();
		PG_RETURN_BOOL(false);
	}
	allowed = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	SPI_finish();
	if (!DatumGetBool(allowed))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to unregister task \"%s\"", name),
				 errdetail("Only the role that registered a task, or a superuser, may register it again or unregister it.")));
	PG_RETURN_BOOL(true);
}

/* the task and executor arguments of jobq.allow_executor() and its undoing */
static void
executor_args(FunctionCallInfo fcinfo, const char *what, char **name, Oid *executor)
{
	JobqCheckPreloaded();
	PreventCommandIfReadOnly(what);
	if (!JobqSchemaRequire()->task_executors)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s needs version 0.6.0 of extension jobq", what),
				 errhint("Update the extension with ALTER EXTENSION jobq UPDATE.")));
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task name must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("executor role must not be null")));
	*name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	*executor = PG_GETARG_OID(1);
	JobqCheckTaskName(*name);
	if (!OidIsValid(*executor) || !SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(*executor)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u does not exist", *executor)));
}

/*
 * jobq.allow_executor(task text, executor regrole, registrant regrole):
 * the executor role, and its members, may claim the jobs of external task
 * task (an administrator's function: EXECUTE is revoked from PUBLIC).
 * With registrant, the task must be registered by that role: a name
 * another role took first is not allowed by mistake.
 */
Datum
jobq_allow_executor(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			executor;
	Oid			argtypes[3] = {TEXTOID, OIDOID, OIDOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		isnull;
	bool		external;
	Oid			registered_by;

	executor_args(fcinfo, "jobq.allow_executor()", &name, &executor);
	if (!PG_ARGISNULL(2) &&
		!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(PG_GETARG_OID(2))))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u does not exist", PG_GETARG_OID(2))));
	values[0] = CStringGetTextDatum(name);
	values[1] = ObjectIdGetDatum(executor);
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	if (PG_ARGISNULL(2))
		nulls[2] = 'n';
	if (JobqExecuteAsOwnerNulls(
			"WITH t AS (SELECT task, fn, registered_by FROM jobq.task"
			"            WHERE task OPERATOR(pg_catalog.=) $1 FOR UPDATE),"
			"     u AS (UPDATE jobq.task k"
			"              SET executors = pg_catalog.array_append("
			"                      COALESCE(k.executors, '{}'), $2::pg_catalog.regrole)"
			"             FROM t"
			"            WHERE k.task OPERATOR(pg_catalog.=) t.task AND t.fn IS NULL"
			"              AND ($3 IS NULL OR t.registered_by::pg_catalog.oid OPERATOR(pg_catalog.=) $3)"
			"              AND NOT COALESCE($2::pg_catalog.regrole OPERATOR(pg_catalog.=) ANY (k.executors), false))"
			"SELECT fn IS NULL, registered_by::pg_catalog.oid FROM t",
			3, argtypes, values, nulls, false) != SPI_OK_SELECT)
		elog(ERROR, "could not allow an executor of jobq task \"%s\"", name);
	if (SPI_processed == 0)
	{
		SPI_finish();
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("task \"%s\" is not registered", name)));
	}
	external = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										  1, &isnull));
	registered_by = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 2, &isnull));
	SPI_finish();
	CacheInvalidateRelcacheByRelid(task_table());
	if (!external)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("task \"%s\" is not an external task", name),
				 errdetail("Its jobs run in the database; executors run only tasks registered without a function.")));
	if (!PG_ARGISNULL(2) && registered_by != PG_GETARG_OID(2))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("task \"%s\" is registered by role \"%s\", not by role \"%s\"",
						name,
						GetUserNameFromId(registered_by, true) ?
						GetUserNameFromId(registered_by, true) : "?",
						GetUserNameFromId(PG_GETARG_OID(2), true) ?
						GetUserNameFromId(PG_GETARG_OID(2), true) : "?")));
	PG_RETURN_VOID();
}

/*
 * jobq.disallow_executor(task text, executor regrole) returns boolean:
 * false if the role was not allowed to run the task.  Jobs it holds now
 * keep their leases.
 */
Datum
jobq_disallow_executor(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			executor;
	Oid			argtypes[2] = {TEXTOID, OIDOID};
	Datum		values[2];
	bool		isnull;
	bool		removed;

	executor_args(fcinfo, "jobq.disallow_executor()", &name, &executor);
	values[0] = CStringGetTextDatum(name);
	values[1] = ObjectIdGetDatum(executor);
	if (execute_task_write("WITH t AS (SELECT task FROM jobq.task"
						   "            WHERE task OPERATOR(pg_catalog.=) $1 FOR UPDATE),"
						   "     u AS (UPDATE jobq.task k"
						   "              SET executors = pg_catalog.array_remove(k.executors,"
						   "                                                      $2::pg_catalog.regrole)"
						   "             FROM t WHERE k.task OPERATOR(pg_catalog.=) t.task"
						   "              AND $2::pg_catalog.regrole OPERATOR(pg_catalog.=) ANY (k.executors)"
						   "           RETURNING 1)"
						   "SELECT (SELECT pg_catalog.count(*) FROM u) OPERATOR(pg_catalog.>) 0 FROM t",
						   2, argtypes, values) != SPI_OK_SELECT)
		elog(ERROR, "could not disallow an executor of jobq task \"%s\"", name);
	if (SPI_processed == 0)
	{
		SPI_finish();
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("task \"%s\" is not registered", name)));
	}
	removed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										 1, &isnull));
	SPI_finish();
	PG_RETURN_BOOL(removed);
}

/*
 * Built-in task jobq.noop: returns its payload.
 */
Datum
jobq_noop(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

#define JOBQ_SLEEP_MAX_SECONDS	86400

/*
 * Built-in task jobq.sleep: sleeps for the payload's "seconds", a number
 * from 0 to JOBQ_SLEEP_MAX_SECONDS, waking for interrupts (a cancel, a
 * timeout, a shutdown end it with an error).  Returns its payload.
 */
Datum
jobq_sleep(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload;
	JsonbValue	key;
	JsonbValue *v;
	double		seconds = -1;
	TimestampTz end;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload of task \"jobq.sleep\" must not be null")));
	payload = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_OBJECT(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload of task \"jobq.sleep\" must be a JSON object"),
				 errhint("Pass an object such as {\"seconds\": 1.5}.")));
	key.type = jbvString;
	key.val.string.val = "seconds";
	key.val.string.len = strlen("seconds");
	v = findJsonbValueFromContainer(&payload->root, JB_FOBJECT, &key);
	if (v != NULL && v->type == jbvNumeric)
		seconds = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
													 NumericGetDatum(v->val.numeric)));
	if (v == NULL || v->type != jbvNumeric || isnan(seconds) ||
		seconds < 0 || seconds > JOBQ_SLEEP_MAX_SECONDS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload of task \"jobq.sleep\" must have a key \"seconds\" with a number from 0 to %d",
						JOBQ_SLEEP_MAX_SECONDS)));

	end = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
									  (int64) (seconds * 1000.0));
	for (;;)
	{
		long		secs;
		int			usecs;
		long		ms;

		CHECK_FOR_INTERRUPTS();
		TimestampDifference(GetCurrentTimestamp(), end, &secs, &usecs);
		ms = secs * 1000 + (usecs + 999) / 1000;
		if (ms <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	PG_RETURN_JSONB_P(payload);
}
