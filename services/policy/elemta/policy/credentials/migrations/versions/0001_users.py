"""Users, their roles and their sender addresses.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "elemta_users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("login", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "elemta_user_roles",
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("elemta_users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("role", sa.String(64), primary_key=True),
    )
    op.create_table(
        "elemta_user_addresses",
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("elemta_users.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
    )


def downgrade() -> None:
    op.drop_table("elemta_user_addresses")
    op.drop_table("elemta_user_roles")
    op.drop_table("elemta_users")
