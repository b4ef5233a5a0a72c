import type { MigrationInterface, QueryRunner } from 'typeorm';

export class IntegratorApi1796578954000 implements MigrationInterface {
  name = 'IntegratorApi1796578954000';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query("CREATE TABLE \"idempotency_key\" (\"userId\" uuid NOT NULL, \"key\" character varying(255) NOT NULL, \"operation\" text NOT NULL, \"requestHash\" character(64) NOT NULL, \"resultId\" uuid, \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), \"expiresAt\" TIMESTAMP WITH TIME ZONE NOT NULL, CONSTRAINT \"PK_703de5e39cfcdf2dee29ca4cd53\" PRIMARY KEY (\"userId\", \"key\"))");
    await runner.query("CREATE INDEX \"IDX_b518f26ab85e77017f0ff4054b\" ON \"idempotency_key\" (\"expiresAt\") ");
    await runner.query("CREATE TABLE \"job_loss\" (\"jobId\" uuid NOT NULL, \"step\" integer NOT NULL, \"loss\" real NOT NULL, CONSTRAINT \"PK_bc763c27f8c514f1c9247018d84\" PRIMARY KEY (\"jobId\", \"step\"))");
    await runner.query("CREATE TABLE \"webhook_settings\" (\"userId\" uuid NOT NULL, \"secret\" text NOT NULL, \"defaultTarget\" jsonb, \"updatedAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"PK_f00ca13967d92a97aa0fdc646a0\" PRIMARY KEY (\"userId\"))");
    await runner.query("CREATE TABLE \"job_webhook\" (\"jobId\" uuid NOT NULL, \"target\" jsonb NOT NULL, \"lastStatus\" text, \"lastProgressStep\" integer NOT NULL DEFAULT '0', \"lastProgressAt\" TIMESTAMP WITH TIME ZONE, CONSTRAINT \"PK_bb9289727ab0f1338aeb808f05e\" PRIMARY KEY (\"jobId\"))");
    await runner.query("CREATE TYPE \"public\".\"webhook_delivery_status\" AS ENUM('PENDING', 'DELIVERED', 'FAILED')");
    await runner.query("CREATE TABLE \"webhook_delivery\" (\"id\" uuid NOT NULL DEFAULT uuid_generate_v4(), \"ownerId\" uuid NOT NULL, \"jobId\" uuid, \"type\" text NOT NULL, \"url\" text NOT NULL, \"body\" text NOT NULL, \"status\" \"public\".\"webhook_delivery_status\" NOT NULL DEFAULT 'PENDING', \"attempts\" integer NOT NULL DEFAULT '0', \"nextAttemptAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), \"lastAttemptAt\" TIMESTAMP WITH TIME ZONE, \"responseStatus\" integer, \"lastError\" text, \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), \"deliveredAt\" TIMESTAMP WITH TIME ZONE, CONSTRAINT \"PK_b1ae290239a778f12399db91354\" PRIMARY KEY (\"id\"))");
    await runner.query("CREATE INDEX \"IDX_690f25551842f64e20045d070d\" ON \"webhook_delivery\" (\"jobId\") ");
    await runner.query("CREATE INDEX \"IDX_8e9e6ef6d6e3a4246f803422f0\" ON \"webhook_delivery\" (\"ownerId\", \"createdAt\") ");
    await runner.query("CREATE INDEX \"IDX_812b5eccb16d7dfe37f37caa07\" ON \"webhook_delivery\" (\"nextAttemptAt\") WHERE \"status\" = 'PENDING'");
    await runner.query("ALTER TABLE \"user\" ADD \"disabledAt\" TIMESTAMP WITH TIME ZONE");
    await runner.query("CREATE INDEX \"IDX_49e45ab57810d2f2c90180f25a\" ON \"job\" (\"type\", \"status\", \"finishedAt\") ");
    await runner.query("CREATE INDEX \"IDX_399adb39c1f74fb67f1725e9a1\" ON \"job\" (\"type\", \"status\", \"createdAt\") ");
    await runner.query("ALTER TABLE \"idempotency_key\" ADD CONSTRAINT \"FK_5c86c2d8c6e070d248ecdfa6715\" FOREIGN KEY (\"userId\") REFERENCES \"user\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"job_loss\" ADD CONSTRAINT \"FK_2a2e31cdd53b4e9019dd79ea0b1\" FOREIGN KEY (\"jobId\") REFERENCES \"job\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"webhook_settings\" ADD CONSTRAINT \"FK_f00ca13967d92a97aa0fdc646a0\" FOREIGN KEY (\"userId\") REFERENCES \"user\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"job_webhook\" ADD CONSTRAINT \"FK_bb9289727ab0f1338aeb808f05e\" FOREIGN KEY (\"jobId\") REFERENCES \"job\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"webhook_delivery\" ADD CONSTRAINT \"FK_8c1405bf8fa9e5a8b40d2df2d71\" FOREIGN KEY (\"ownerId\") REFERENCES \"user\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"webhook_delivery\" ADD CONSTRAINT \"FK_690f25551842f64e20045d070da\" FOREIGN KEY (\"jobId\") REFERENCES \"job\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query("ALTER TABLE \"webhook_delivery\" DROP CONSTRAINT \"FK_690f25551842f64e20045d070da\"");
    await runner.query("ALTER TABLE \"webhook_delivery\" DROP CONSTRAINT \"FK_8c1405bf8fa9e5a8b40d2df2d71\"");
    await runner.query("ALTER TABLE \"job_webhook\" DROP CONSTRAINT \"FK_bb9289727ab0f1338aeb808f05e\"");
    await runner.query("ALTER TABLE \"webhook_settings\" DROP CONSTRAINT \"FK_f00ca13967d92a97aa0fdc646a0\"");
    await runner.query("ALTER TABLE \"job_loss\" DROP CONSTRAINT \"FK_2a2e31cdd53b4e9019dd79ea0b1\"");
    await runner.query("ALTER TABLE \"idempotency_key\" DROP CONSTRAINT \"FK_5c86c2d8c6e070d248ecdfa6715\"");
    await runner.query("DROP INDEX \"public\".\"IDX_399adb39c1f74fb67f1725e9a1\"");
    await runner.query("DROP INDEX \"public\".\"IDX_49e45ab57810d2f2c90180f25a\"");
    await runner.query("ALTER TABLE \"user\" DROP COLUMN \"disabledAt\"");
    await runner.query("DROP INDEX \"public\".\"IDX_812b5eccb16d7dfe37f37caa07\"");
    await runner.query("DROP INDEX \"public\".\"IDX_8e9e6ef6d6e3a4246f803422f0\"");
    await runner.query("DROP INDEX \"public\".\"IDX_690f25551842f64e20045d070d\"");
    await runner.query("DROP TABLE \"webhook_delivery\"");
    await runner.query("DROP TYPE \"public\".\"webhook_delivery_status\"");
    await runner.query("DROP TABLE \"job_webhook\"");
    await runner.query("DROP TABLE \"webhook_settings\"");
    await runner.query("DROP TABLE \"job_loss\"");
    await runner.query("DROP INDEX \"public\".\"IDX_b518f26ab85e77017f0ff4054b\"");
    await runner.query("DROP TABLE \"idempotency_key\"");
  }
}
