/*-------------------------------------------------------------------------
 *
 * schema.c
 *		The jobq schema installed in this database: its version and tables.
 *
 * The library may be newer than the extension installed in a database:
 * between a package upgrade and ALTER EXTENSION jobq UPDATE, the workers
 * and the API run against the tables of an older version.  What differs
 * between versions (which columns jobq.job has, which tables exist) is
 * decided here, from pg_extension's version, once: every other file asks
 * JobqSchemaGet() and prepares its statements for the answer, instead of
 * probing the catalogs on every call.
 *
 * The answer is kept until something may have changed it:
 *	- a relcache invalidation of one of jobq's tables (ALTER TABLE in an
 *	  upgrade script, DROP EXTENSION), or of all relations;
 *	- a change in pg_namespace (CREATE EXTENSION makes schema jobq);
 *	- ALTER EXTENSION jobq UPDATE: its backend sends a relcache
 *	  invalidation of jobq.job (object_access_hook below) that every
 *	  backend, the workers included, receives when the update commits.
 * A caller that keeps prepared statements compares the generation, which
 * changes with every new answer.
 *
 * IDENTIFICATION
 *		src/schema.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "jobq.h"

static JobqSchema schema;
static bool schema_valid = false;
static bool callbacks_registered = false;
static object_access_hook_type prev_object_access_hook = NULL;

static void
schema_relcache_callback(Datum arg, Oid relid)
{
	int			i;

	if (!OidIsValid(relid))
	{
		schema_valid = false;
		return;
	}
	for (i = 0; i < JOBQ_NUM_RELS; i++)
		if (schema.relids[i] == relid)
			schema_valid = false;
}

static void
schema_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	schema_valid = false;
}

/* names of the relations, indexed by JobqRel */
static const char *const rel_names[JOBQ_NUM_RELS] = {
	[JOBQ_REL_JOB] = "job",
	[JOBQ_REL_HISTORY] = "job_history",
	[JOBQ_REL_JOB_SEQ] = "job_id_seq",
	[JOBQ_REL_TASK] = "task",
	[JOBQ_REL_QUEUES] = "queues",
	[JOBQ_REL_ROLE_LIMITS] = "role_limits",
	[JOBQ_REL_JOB_PKEY] = "job_pkey",
	[JOBQ_REL_EXTERNAL_IDX] = "job_external_idx",
};

/* "1.2.3" as 10203; 0 if it is not of that form */
static int
parse_version(const char *v)
{
	int			major,
				minor,
				patch;
	char		rest;

	if (sscanf(v, "%d.%d.%d%c", &major, &minor, &patch, &rest) != 3 ||
		major < 0 || minor < 0 || minor > 99 || patch < 0 || patch > 99)
		return 0;
	return major * 10000 + minor * 100 + patch;
}

/* the installed version of extension jobq, 0 if it is not installed */
static int
installed_version(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	int			version = 0;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("jobq"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = parse_version(TextDatumGetCString(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

static void
schema_build(void)
{
	JobqSchema	old = schema;
	Oid			nsp;
	int			i;

	memset(schema.relids, 0, sizeof(schema.relids));
	schema.installed = false;
	schema.version = installed_version();
	nsp = get_namespace_oid("jobq", true);
	if (OidIsValid(nsp))
		for (i = 0; i < JOBQ_NUM_RELS; i++)
			schema.relids[i] = get_relname_relid(rel_names[i], nsp);
	schema.owner = InvalidOid;
	if (schema.version > 0 && OidIsValid(schema.relids[JOBQ_REL_JOB]) &&
		OidIsValid(schema.relids[JOBQ_REL_HISTORY]))
	{
		HeapTuple	tup = SearchSysCache1(RELOID,
										  ObjectIdGetDatum(schema.relids[JOBQ_REL_JOB]));

		if (HeapTupleIsValid(tup))
		{
			schema.owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
			ReleaseSysCache(tup);
			schema.installed = true;
		}
	}

	/* what came with which version */
	schema.tasks = schema.version >= 300;
	schema.role_limits = schema.version >= 400;
	schema.dedup_per_owner = schema.version >= 400;
	schema.job_state = schema.version < 500;
	schema.executors = schema.version >= 500;
	schema.task_executors = schema.version >= 600;

	/*
	 * Statements prepared for the schema stay valid unless it changed: a
	 * VACUUM or ANALYZE of jobq.job invalidates its relcache entry too.
	 */
	if (schema.installed != old.installed || schema.version != old.version ||
		memcmp(schema.relids, old.relids, sizeof(schema.relids)) != 0)
		schema.generation++;
}

/*
 * The installed schema, as of the latest invalidations received.  Needs a
 * transaction.  Check ->installed before anything else.
 */
const JobqSchema *
JobqSchemaGet(void)
{
	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(schema_relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, schema_syscache_callback,
									  (Datum) 0);
		callbacks_registered = true;
	}
	/*
	 * An invalidation that arrives while we build makes us build again; a
	 * build that fails leaves the answer invalid.
	 */
	while (!schema_valid)
	{
		schema_valid = true;
		PG_TRY();
		{
			schema_build();
		}
		PG_CATCH();
		{
			schema_valid = false;
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	return &schema;
}

/*
 * The installed schema, or an error that says the extension is missing
 * (for the SQL functions, which exist only where it is installed, but may
 * run while another session drops it).
 */
const JobqSchema *
JobqSchemaRequire(void)
{
	const JobqSchema *s = JobqSchemaGet();

	if (!s->installed)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("extension \"jobq\" is not installed in this database"),
				 errhint("Create it with CREATE EXTENSION jobq.")));
	return s;
}

/* the OID of jobq.<relname>, InvalidOid if the schema has none */
Oid
JobqSchemaRelid(const char *relname)
{
	const JobqSchema *s = JobqSchemaGet();
	int			i;

	for (i = 0; i < JOBQ_NUM_RELS; i++)
		if (strcmp(rel_names[i], relname) == 0)
			return s->relids[i];
	elog(ERROR, "jobq has no relation \"%s\"", relname);
	return InvalidOid;			/* keep compiler quiet */
}

/*
 * ALTER EXTENSION jobq UPDATE: when it commits, every backend must look at
 * the schema again, even if the update script changed none of the tables.
 */
static void
schema_object_access(ObjectAccessType access, Oid classId, Oid objectId,
					 int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (access == OAT_POST_ALTER && classId == ExtensionRelationId)
	{
		char	   *name = get_extension_name(objectId);

		if (name != NULL && strcmp(name, "jobq") == 0)
		{
			Oid			nsp = get_namespace_oid("jobq", true);
			Oid			job = OidIsValid(nsp) ? get_relname_relid("job", nsp) : InvalidOid;

			if (OidIsValid(job))
				CacheInvalidateRelcacheByRelid(job);
		}
	}
}

void
JobqSchemaInstallHooks(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = schema_object_access;
}

/*
 * Lock jobq's tables for an execution transaction, so that DROP EXTENSION
 * waits for the jobs in flight to commit with their outcomes instead of
 * pulling the tables from under them.  Returns false if the extension is
 * gone (possibly dropped while we waited for the lock).
 */
bool
JobqLockTables(void)
{
	const JobqSchema *schema = JobqSchemaGet();
	Oid			job = schema->relids[JOBQ_REL_JOB];
	Oid			history = schema->relids[JOBQ_REL_HISTORY];

	if (!schema->installed)
		return false;
	LockRelationOid(job, RowExclusiveLock);
	LockRelationOid(history, RowExclusiveLock);

	/*
	 * Taking the locks received the invalidations of a DROP EXTENSION (and
	 * of a CREATE EXTENSION after it: then the tables are new ones, not
	 * locked; the next transaction takes theirs).
	 */
	schema = JobqSchemaGet();
	return schema->installed && schema->relids[JOBQ_REL_JOB] == job &&
		schema->relids[JOBQ_REL_HISTORY] == history;
}
