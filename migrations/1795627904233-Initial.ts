import type { MigrationInterface, QueryRunner } from 'typeorm';

export class Initial1795627904233 implements MigrationInterface {
  name = 'Initial1795627904233';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query("CREATE TYPE \"public\".\"user_role\" AS ENUM('USER', 'ADMIN')");
    await runner.query("CREATE TABLE \"user\" (\"id\" uuid NOT NULL DEFAULT uuid_generate_v4(), \"email\" character varying(320) NOT NULL, \"role\" \"public\".\"user_role\" NOT NULL DEFAULT 'USER', \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"UQ_e12875dfb3b1d92d7d7c5377e22\" UNIQUE (\"email\"), CONSTRAINT \"PK_cace4a159ff9f2512dd42373760\" PRIMARY KEY (\"id\"))");
    await runner.query("CREATE TABLE \"api_key\" (\"id\" uuid NOT NULL DEFAULT uuid_generate_v4(), \"userId\" uuid NOT NULL, \"name\" character varying(100) NOT NULL, \"prefix\" character varying(32) NOT NULL, \"secretHash\" character(64) NOT NULL, \"lastUsedAt\" TIMESTAMP WITH TIME ZONE, \"revokedAt\" TIMESTAMP WITH TIME ZONE, \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"UQ_c4f6ccad30c0862eb54af9fb0ac\" UNIQUE (\"prefix\"), CONSTRAINT \"PK_b1bd840641b8acbaad89c3d8d11\" PRIMARY KEY (\"id\"))");
    await runner.query("CREATE INDEX \"IDX_277972f4944205eb29127f9bb6\" ON \"api_key\" (\"userId\") ");
    await runner.query("CREATE TABLE \"base_model\" (\"id\" uuid NOT NULL DEFAULT uuid_generate_v4(), \"name\" character varying(200) NOT NULL, \"storageLocation\" character varying(1024) NOT NULL, \"architecture\" character varying(64) NOT NULL, \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"UQ_bac455f39005e9044a9ccd422ba\" UNIQUE (\"name\"), CONSTRAINT \"PK_6858b0bfee6d486b76e323b3e9b\" PRIMARY KEY (\"id\"))");
    await runner.query("CREATE TYPE \"public\".\"model_kind\" AS ENUM('PRIVATE', 'PRIVATE_META', 'META')");
    await runner.query("CREATE TABLE \"model\" (\"id\" uuid NOT NULL DEFAULT uuid_generate_v4(), \"name\" character varying(200) NOT NULL, \"kind\" \"public\".\"model_kind\" NOT NULL, \"ownerId\" uuid, \"baseModelId\" uuid NOT NULL, \"headVersionId\" uuid, \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), \"updatedAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"model_owner_matches_kind\" CHECK ((\"kind\" = 'META') = (\"ownerId\" IS NULL)), CONSTRAINT \"PK_d6df271bba301d5cc79462912a4\" PRIMARY KEY (\"id\"))");
    await runner.query("CREATE INDEX \"IDX_5b956655bd4c7e9e7111abd81e\" ON \"model\" (\"ownerId\") ");
    await runner.query("CREATE TYPE \"public\".\"concept_kind\" AS ENUM('OBJECT', 'STYLE', 'FACE')");
    await runner.query("CREATE TABLE \"concept\" (\"id\" uuid NOT NULL DEFAULT uuid_generate_v4(), \"token\" character varying(64) NOT NULL, \"category\" character varying(100) NOT NULL, \"kind\" \"public\".\"concept_kind\" NOT NULL, \"modelId\" uuid NOT NULL, \"contributorId\" uuid NOT NULL, \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"concept_token_per_model\" UNIQUE (\"modelId\", \"token\"), CONSTRAINT \"PK_83c1330866b9866ac2d0ed2b36b\" PRIMARY KEY (\"id\"))");
    await runner.query("CREATE INDEX \"IDX_f19b46e3bd975f23f693121264\" ON \"concept\" (\"modelId\") ");
    await runner.query("CREATE TABLE \"model_version\" (\"id\" uuid NOT NULL DEFAULT uuid_generate_v4(), \"modelId\" uuid NOT NULL, \"number\" integer NOT NULL, \"weightsKey\" character varying(1024) NOT NULL, \"parentVersionId\" uuid, \"contributionId\" uuid, \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"model_version_number\" UNIQUE (\"modelId\", \"number\"), CONSTRAINT \"PK_1213bca4e8ee7ac1323cc4bf454\" PRIMARY KEY (\"id\"))");
    await runner.query("CREATE TYPE \"public\".\"contribution_status\" AS ENUM('PENDING', 'TRAINING', 'MERGED', 'FAILED', 'REVERTED')");
    await runner.query("CREATE TABLE \"contribution\" (\"id\" uuid NOT NULL DEFAULT uuid_generate_v4(), \"userId\" uuid NOT NULL, \"modelId\" uuid NOT NULL, \"conceptId\" uuid NOT NULL, \"status\" \"public\".\"contribution_status\" NOT NULL DEFAULT 'PENDING', \"resultingVersionId\" uuid, \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"PK_878330fa5bb34475732a5883d58\" PRIMARY KEY (\"id\"))");
    await runner.query("CREATE INDEX \"IDX_d2084068d6246a419df6fec9d0\" ON \"contribution\" (\"userId\") ");
    await runner.query("CREATE INDEX \"IDX_8bf0941734e3bc870c8d9f2586\" ON \"contribution\" (\"modelId\") ");
    await runner.query("CREATE TYPE \"public\".\"job_type\" AS ENUM('FINETUNE', 'GENERATE')");
    await runner.query("CREATE TYPE \"public\".\"job_status\" AS ENUM('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELED')");
    await runner.query("CREATE TABLE \"job\" (\"id\" uuid NOT NULL DEFAULT uuid_generate_v4(), \"type\" \"public\".\"job_type\" NOT NULL, \"status\" \"public\".\"job_status\" NOT NULL DEFAULT 'QUEUED', \"params\" jsonb NOT NULL DEFAULT '{}', \"progress\" real NOT NULL DEFAULT '0', \"error\" text, \"ownerId\" uuid NOT NULL, \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), \"startedAt\" TIMESTAMP WITH TIME ZONE, \"finishedAt\" TIMESTAMP WITH TIME ZONE, CONSTRAINT \"PK_98ab1c14ff8d1cf80d18703b92f\" PRIMARY KEY (\"id\"))");
    await runner.query("CREATE INDEX \"IDX_4230d15401eafcf6f453820801\" ON \"job\" (\"ownerId\") ");
    await runner.query("CREATE TABLE \"image\" (\"id\" uuid NOT NULL DEFAULT uuid_generate_v4(), \"objectKey\" character varying(1024) NOT NULL, \"seed\" bigint NOT NULL, \"prompt\" text NOT NULL, \"jobId\" uuid NOT NULL, \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"PK_d6db1ab4ee9ad9dbe86c64e4cc3\" PRIMARY KEY (\"id\"))");
    await runner.query("CREATE INDEX \"IDX_2eb3e42d04068a72a0d1fef4ee\" ON \"image\" (\"jobId\") ");
    await runner.query("CREATE TABLE \"instance_image\" (\"id\" uuid NOT NULL DEFAULT uuid_generate_v4(), \"objectKey\" character varying(1024) NOT NULL, \"sha256\" character(64) NOT NULL, \"width\" integer NOT NULL, \"height\" integer NOT NULL, \"ownerId\" uuid NOT NULL, \"conceptId\" uuid NOT NULL, \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"PK_8f007587fb98403c646c878d7b9\" PRIMARY KEY (\"id\"))");
    await runner.query("CREATE INDEX \"IDX_d73c7483ddee90033772b92180\" ON \"instance_image\" (\"ownerId\") ");
    await runner.query("CREATE INDEX \"IDX_e98c4e7457f5a84f94e1f092b2\" ON \"instance_image\" (\"conceptId\") ");
    await runner.query("ALTER TABLE \"api_key\" ADD CONSTRAINT \"FK_277972f4944205eb29127f9bb6c\" FOREIGN KEY (\"userId\") REFERENCES \"user\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"model\" ADD CONSTRAINT \"FK_5b956655bd4c7e9e7111abd81e8\" FOREIGN KEY (\"ownerId\") REFERENCES \"user\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"model\" ADD CONSTRAINT \"FK_d865a011c8df74313ffd90cdd55\" FOREIGN KEY (\"baseModelId\") REFERENCES \"base_model\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"model\" ADD CONSTRAINT \"FK_27d696a53fad67124e0cb6e483d\" FOREIGN KEY (\"headVersionId\") REFERENCES \"model_version\"(\"id\") ON DELETE SET NULL ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"concept\" ADD CONSTRAINT \"FK_f19b46e3bd975f23f6931212644\" FOREIGN KEY (\"modelId\") REFERENCES \"model\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"concept\" ADD CONSTRAINT \"FK_4fc597af558947aacd1238480b1\" FOREIGN KEY (\"contributorId\") REFERENCES \"user\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"model_version\" ADD CONSTRAINT \"FK_709aebddab52d554940e106b5f5\" FOREIGN KEY (\"modelId\") REFERENCES \"model\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"model_version\" ADD CONSTRAINT \"FK_26055f47ac4eff9f62ba015ab42\" FOREIGN KEY (\"parentVersionId\") REFERENCES \"model_version\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"model_version\" ADD CONSTRAINT \"FK_34f4faae0ce90829f298eb5b2c1\" FOREIGN KEY (\"contributionId\") REFERENCES \"contribution\"(\"id\") ON DELETE SET NULL ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"contribution\" ADD CONSTRAINT \"FK_d2084068d6246a419df6fec9d0f\" FOREIGN KEY (\"userId\") REFERENCES \"user\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"contribution\" ADD CONSTRAINT \"FK_8bf0941734e3bc870c8d9f25867\" FOREIGN KEY (\"modelId\") REFERENCES \"model\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"contribution\" ADD CONSTRAINT \"FK_660a90eb35454113dd9f3901d0f\" FOREIGN KEY (\"conceptId\") REFERENCES \"concept\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"contribution\" ADD CONSTRAINT \"FK_28332b892a06e256c10d24b5442\" FOREIGN KEY (\"resultingVersionId\") REFERENCES \"model_version\"(\"id\") ON DELETE SET NULL ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"job\" ADD CONSTRAINT \"FK_4230d15401eafcf6f4538208015\" FOREIGN KEY (\"ownerId\") REFERENCES \"user\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"image\" ADD CONSTRAINT \"FK_2eb3e42d04068a72a0d1fef4eeb\" FOREIGN KEY (\"jobId\") REFERENCES \"job\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"instance_image\" ADD CONSTRAINT \"FK_d73c7483ddee90033772b921801\" FOREIGN KEY (\"ownerId\") REFERENCES \"user\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"instance_image\" ADD CONSTRAINT \"FK_e98c4e7457f5a84f94e1f092b22\" FOREIGN KEY (\"conceptId\") REFERENCES \"concept\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query("ALTER TABLE \"instance_image\" DROP CONSTRAINT \"FK_e98c4e7457f5a84f94e1f092b22\"");
    await runner.query("ALTER TABLE \"instance_image\" DROP CONSTRAINT \"FK_d73c7483ddee90033772b921801\"");
    await runner.query("ALTER TABLE \"image\" DROP CONSTRAINT \"FK_2eb3e42d04068a72a0d1fef4eeb\"");
    await runner.query("ALTER TABLE \"job\" DROP CONSTRAINT \"FK_4230d15401eafcf6f4538208015\"");
    await runner.query("ALTER TABLE \"contribution\" DROP CONSTRAINT \"FK_28332b892a06e256c10d24b5442\"");
    await runner.query("ALTER TABLE \"contribution\" DROP CONSTRAINT \"FK_660a90eb35454113dd9f3901d0f\"");
    await runner.query("ALTER TABLE \"contribution\" DROP CONSTRAINT \"FK_8bf0941734e3bc870c8d9f25867\"");
    await runner.query("ALTER TABLE \"contribution\" DROP CONSTRAINT \"FK_d2084068d6246a419df6fec9d0f\"");
    await runner.query("ALTER TABLE \"model_version\" DROP CONSTRAINT \"FK_34f4faae0ce90829f298eb5b2c1\"");
    await runner.query("ALTER TABLE \"model_version\" DROP CONSTRAINT \"FK_26055f47ac4eff9f62ba015ab42\"");
    await runner.query("ALTER TABLE \"model_version\" DROP CONSTRAINT \"FK_709aebddab52d554940e106b5f5\"");
    await runner.query("ALTER TABLE \"concept\" DROP CONSTRAINT \"FK_4fc597af558947aacd1238480b1\"");
    await runner.query("ALTER TABLE \"concept\" DROP CONSTRAINT \"FK_f19b46e3bd975f23f6931212644\"");
    await runner.query("ALTER TABLE \"model\" DROP CONSTRAINT \"FK_27d696a53fad67124e0cb6e483d\"");
    await runner.query("ALTER TABLE \"model\" DROP CONSTRAINT \"FK_d865a011c8df74313ffd90cdd55\"");
    await runner.query("ALTER TABLE \"model\" DROP CONSTRAINT \"FK_5b956655bd4c7e9e7111abd81e8\"");
    await runner.query("ALTER TABLE \"api_key\" DROP CONSTRAINT \"FK_277972f4944205eb29127f9bb6c\"");
    await runner.query("DROP INDEX \"public\".\"IDX_e98c4e7457f5a84f94e1f092b2\"");
    await runner.query("DROP INDEX \"public\".\"IDX_d73c7483ddee90033772b92180\"");
    await runner.query("DROP TABLE \"instance_image\"");
    await runner.query("DROP INDEX \"public\".\"IDX_2eb3e42d04068a72a0d1fef4ee\"");
    await runner.query("DROP TABLE \"image\"");
    await runner.query("DROP INDEX \"public\".\"IDX_4230d15401eafcf6f453820801\"");
    await runner.query("DROP TABLE \"job\"");
    await runner.query("DROP TYPE \"public\".\"job_status\"");
    await runner.query("DROP TYPE \"public\".\"job_type\"");
    await runner.query("DROP INDEX \"public\".\"IDX_8bf0941734e3bc870c8d9f2586\"");
    await runner.query("DROP INDEX \"public\".\"IDX_d2084068d6246a419df6fec9d0\"");
    await runner.query("DROP TABLE \"contribution\"");
    await runner.query("DROP TYPE \"public\".\"contribution_status\"");
    await runner.query("DROP TABLE \"model_version\"");
    await runner.query("DROP INDEX \"public\".\"IDX_f19b46e3bd975f23f693121264\"");
    await runner.query("DROP TABLE \"concept\"");
    await runner.query("DROP TYPE \"public\".\"concept_kind\"");
    await runner.query("DROP INDEX \"public\".\"IDX_5b956655bd4c7e9e7111abd81e\"");
    await runner.query("DROP TABLE \"model\"");
    await runner.query("DROP TYPE \"public\".\"model_kind\"");
    await runner.query("DROP TABLE \"base_model\"");
    await runner.query("DROP INDEX \"public\".\"IDX_277972f4944205eb29127f9bb6\"");
    await runner.query("DROP TABLE \"api_key\"");
    await runner.query("DROP TABLE \"user\"");
    await runner.query("DROP TYPE \"public\".\"user_role\"");
  }
}
